use auction_web::{Application, WebConfig};
use clap::Parser;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = WebConfig::parse();
    let app = Application::build(config).await?;
    log::info!("auction-web listening on http://{}", app.address());
    app.run_until_stopped().await
}
