use std::time::Duration;

use crate::helpers::{eventually, TestStack};

#[tokio::test]
async fn a_form_bid_redirects_to_bid_added_and_the_homepage_shows_the_new_highest_bid() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let writer = stack.spawn_db_writer("writers");
    let home = app.get("/").await.text().await.unwrap();
    assert!(home.contains("The first auction") && home.contains("No bids yet."), "{home}");

    let response = app
        .client
        .post(format!("{}/auctions/1/bids", app.address))
        .form(&[("name", "<b>Eve</b> & co"), ("price", "25.5")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/?placed="), "{location}");
    let bid_id = location.trim_start_matches("/?placed=").split('#').next().unwrap().to_owned();

    let page = app.get(&location).await.text().await.unwrap();
    assert!(page.contains("Bid added!"), "{page}");
    assert!(page.contains(&bid_id), "the bid id is shown");
    assert!(page.contains("&lt;b&gt;Eve&lt;") && !page.contains("<b>Eve</b>"), "user text is escaped");

    eventually(Duration::from_secs(20), "the homepage shows the new highest bid", || async {
        let home = app.get("/").await.text().await.unwrap();
        (home.contains("Highest bid: <strong>25.50</strong>") && home.contains("&lt;b&gt;Eve&lt;")).then_some(())
    })
    .await;
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_form_with_a_bad_price_is_refused_with_its_reason_and_values_kept() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;

    let response = app
        .client
        .post(format!("{}/auctions/1/bids", app.address))
        .form(&[("name", "Ada"), ("price", "12.345")])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("Your bid was not placed: price: must be a number above 0 with at most 2 decimals"), "{page}");
    assert!(page.contains("value=\"12.345\""), "the typed value is kept");
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}

#[tokio::test]
async fn with_mysql_out_of_reach_the_homepage_and_bids_answer_503_with_a_reason() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.database.url = "mysql://auction:auction@127.0.0.1:1/auction".into();
    let app = crate::helpers::TestApp::spawn(config).await;

    let home = app.get("/").await;
    assert_eq!(home.status(), 503);
    assert!(home.text().await.unwrap().contains("the auction database is not reachable"));
    let response = app.post_bid_json("1", serde_json::json!({"name": "Ada", "price": "10"})).await;
    assert_eq!(response.status(), 503);
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("database"), "{error}");
    assert_eq!(stack.messages_in_topic(), 0, "a bid on an auction that could not be checked is not produced");
    stack.cleanup().await;
}
