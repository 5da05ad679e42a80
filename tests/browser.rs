//! The site in a real browser (Debian's headless Chromium, driven by playwright-core from
//! tests/browser/, installed by scripts/install-deps.sh): the checks themselves are in
//! tests/browser/e2e.mjs; this test gives them a site on the real stack with two web replicas,
//! a db-writer and a file-backup, and checks the outcome a user would: the bids in MySQL and in
//! the CSV. Screenshots of each page land in target/browser/.

use std::path::PathBuf;
use std::time::Duration;

use auction_web::DashboardConfig;

use crate::helpers::{csv_rows, eventually, TestApp, TestStack};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bids_from_the_form_and_from_another_replica_show_live_and_as_text_in_chromium() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/install-deps.sh (make test does)",
        dir.display()
    );
    let stack = TestStack::new().await;
    let csv = stack.csv_path();
    let (writers, backups) = (format!("writers-{}", stack.suffix), format!("backup-{}", stack.suffix));
    let writer = stack.spawn_db_writer(&writers);
    let backup = stack.spawn_file_backup(&backups, &csv);
    let mut config = stack.web_config();
    config.dashboard = DashboardConfig { consumer_groups: vec![writers.clone(), backups.clone()], backup_csv: Some(csv.clone()) };
    let web = TestApp::spawn(config).await;
    let other = stack.spawn_web().await;
    for app in [&web, &other] {
        eventually(Duration::from_secs(30), "the site is ready", || async { (app.get("/readyz").await.status() == 200).then_some(()) }).await;
    }

    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    let mut node = std::process::Command::new("node");
    node.arg(dir.join("e2e.mjs"))
        .current_dir(&dir)
        .env("BASE_URL", &web.address)
        .env("OTHER_URL", &other.address)
        .env("AUCTION_ID", "1")
        .env("SCREENSHOT_DIR", &screenshots);
    // The script bounds each of its waits; this bounds the whole run.
    let output = tokio::time::timeout(Duration::from_secs(180), tokio::task::spawn_blocking(move || node.output()))
        .await
        .expect("the browser checks end within 3 min")
        .expect("the node task")
        .expect("node runs (scripts/install-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser checks failed: {stderr}\n{stdout}");
    let results: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the checks print their results as JSON");
    println!("browser results: {results}");
    for page in ["home.png", "auction-bid-added.png", "dashboard.png", "auction-outbid.png"] {
        assert!(screenshots.join(page).is_file(), "no screenshot {page}");
    }

    // The bid placed through the form and the one through the other replica are both recorded.
    let form_bid = results["form_bid_id"].as_str().expect("the form's bid id").to_owned();
    let rows = eventually(Duration::from_secs(20), "both browser-test bids are in MySQL", || async {
        let rows = stack.bid_rows().await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    assert!(rows.iter().any(|r| r.0 == form_bid && r.2 == "Ann Browser"), "the form's bid is not in MySQL: {rows:?}");
    assert!(rows.iter().any(|r| r.2 == "<script>alert(1)</script>"), "the API bid is not in MySQL: {rows:?}");
    let lines = eventually(Duration::from_secs(20), "both bids are in the CSV", || async {
        let lines = csv_rows(&csv);
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert!(lines.iter().any(|l| &l[2] == "<script>alert(1)</script>"), "the API bid is not in the CSV");

    writer.stop().await;
    backup.stop().await;
    stack.cleanup().await;
}
