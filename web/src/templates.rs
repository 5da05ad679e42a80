//! The HTML templates (tera, autoescaped), embedded so the binary serves the templates it was
//! built and tested with.

use tera::{Context, Tera};

pub const INDEX: &str = "index.html";

pub struct Templates {
    tera: Tera,
}

impl Templates {
    pub fn new() -> Result<Self, tera::Error> {
        let mut tera = Tera::new();
        tera.add_raw_template(INDEX, include_str!("../../templates/index.html"))?;
        Ok(Self { tera })
    }

    pub fn render(&self, name: &str, context: &Context) -> Result<String, tera::Error> {
        self.tera.render(name, context)
    }
}
