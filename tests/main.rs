//! Integration tests over the real stack: Kafka on 127.0.0.1:9092, the Apicurio registry on
//! 127.0.0.1:8081 and MariaDB on 127.0.0.1:3306 (`make stack-up`); `secure` also uses the
//! stack's SASL_SSL listener (127.0.0.1:9094) and https registry (127.0.0.1:8444). Each test makes
//! its own topic, consumer groups, database and CSV file, so tests run in parallel.

mod api;
mod auctions_api;
mod backup_restart;
mod browser;
mod consumers;
mod delivery;
mod dlq_audit;
mod helpers;
mod metrics;
mod pages;
mod report;
mod secure;
mod site;
mod standing;
mod status;
mod views;
mod web_delivery;
