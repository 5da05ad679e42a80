//! The HTML templates (tera, autoescaped), embedded so the binary serves the templates it was
//! built and tested with.

use tera::{Context, Tera};

pub const INDEX: &str = "index.html";
pub const AUCTION: &str = "auction.html";
pub const ADMIN: &str = "admin.html";
pub const MESSAGE: &str = "message.html";
pub const DASHBOARD: &str = "dashboard.html";

pub struct Templates {
    tera: Tera,
}

impl Templates {
    pub fn new() -> Result<Self, tera::Error> {
        let mut tera = Tera::new();
        // Added together: the pages extend base.html and include bids.html.
        tera.add_raw_templates([
            ("base.html", include_str!("../../templates/base.html")),
            ("bids.html", include_str!("../../templates/bids.html")),
            (INDEX, include_str!("../../templates/index.html")),
            (AUCTION, include_str!("../../templates/auction.html")),
            (ADMIN, include_str!("../../templates/admin.html")),
            (MESSAGE, include_str!("../../templates/message.html")),
            (DASHBOARD, include_str!("../../templates/dashboard.html")),
        ])?;
        Ok(Self { tera })
    }

    pub fn render(&self, name: &str, context: &Context) -> Result<String, tera::Error> {
        self.tera.render(name, context)
    }
}
