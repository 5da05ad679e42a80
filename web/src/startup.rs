use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use auction_common::config::{DatabaseConfig, KafkaConfig, RegistryConfig};
use auction_common::{db, kafka, preflight, registry::BidEncoder};
use tokio::sync::watch;

use crate::bidding::{Bidding, BiddingLimits};
use crate::board::{Board, BoardSettings};
use crate::metrics::{self, WebMetrics};
use crate::publish::BidPublisher;
use crate::state::{AppState, Readiness};
use crate::store::{Store, StoreTimeouts};
use crate::templates::Templates;
use crate::admin::{self, Admin, AuctionWriter};
use crate::security::{self, FrontDoor, SecurityConfig};
use crate::feed::{self, Feed};
use crate::health::{self, DashboardConfig};
use crate::{api, pages};

/// Settings of the site. Every one is also an environment variable.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "auction-web", version, about = "The auction bidding site")]
pub struct WebConfig {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long = "bind-addr", env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: String,
    /// How long a bid may wait for the broker's ack, retries included, before the bidder gets a 503.
    #[arg(long = "kafka-delivery-timeout-ms", env = "KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 5000)]
    pub delivery_timeout_ms: u64,
    /// HTTP worker threads (default: one per CPU core).
    #[arg(long = "http-workers", env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub security: SecurityConfig,
    #[command(flatten)]
    pub dashboard: DashboardConfig,
}

const DEFAULT_MAX_BIDS_IN_FLIGHT: usize = 10_000;
const DEFAULT_IDEMPOTENCY_KEYS_MAX: usize = 100_000;
const DEFAULT_IDEMPOTENCY_KEY_TTL_SECS: u64 = 86_400;
const DEFAULT_ACKED_BIDS_MAX: usize = 100_000;
const DEFAULT_DATABASE_TIMEOUT_MS: u64 = 3_000;
const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
const DEFAULT_STANDING_REFRESH_MS: u64 = 1_000;

/// The bounds on memory and time the site keeps whatever Kafka, MySQL or the bidders do.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Most bids handled at once (checked, encoded, or waiting for Kafka's ack); one more gets
    /// a 503 with Retry-After at once.
    #[arg(long = "max-bids-in-flight", env = "MAX_BIDS_IN_FLIGHT", default_value_t = DEFAULT_MAX_BIDS_IN_FLIGHT)]
    pub max_bids_in_flight: usize,
    /// Most idempotency keys remembered; beyond it the oldest is forgotten.
    #[arg(long = "idempotency-keys-max", env = "IDEMPOTENCY_KEYS_MAX", default_value_t = DEFAULT_IDEMPOTENCY_KEYS_MAX)]
    pub idempotency_keys_max: usize,
    /// How long an idempotency key is remembered after its first use.
    #[arg(long = "idempotency-key-ttl-secs", env = "IDEMPOTENCY_KEY_TTL_SECS", default_value_t = DEFAULT_IDEMPOTENCY_KEY_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_key_ttl_secs: u64,
    /// Most acked bids remembered so `GET /api/bids/{bid_id}` and the page after a form bid can
    /// show them before the db-writer stored them; beyond it the oldest is forgotten.
    #[arg(long = "acked-bids-max", env = "ACKED_BIDS_MAX", default_value_t = DEFAULT_ACKED_BIDS_MAX)]
    pub acked_bids_max: usize,
    /// How long a request may wait for a MySQL connection (from the pool, or a new one: TCP and
    /// handshake) before it gets a 503.
    #[arg(long = "database-connect-timeout-ms", env = "DATABASE_CONNECT_TIMEOUT_MS", default_value_t = DEFAULT_DATABASE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub database_connect_timeout_ms: u64,
    /// How long one MySQL query may take before the request gets a 503.
    #[arg(long = "database-query-timeout-ms", env = "DATABASE_QUERY_TIMEOUT_MS", default_value_t = DEFAULT_DATABASE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub database_query_timeout_ms: u64,
    /// After SIGTERM or SIGINT: how long the site may take to stop. It stops accepting at once,
    /// lets requests in flight finish (all but the last 2 s), then flushes the producer.
    #[arg(long = "shutdown-timeout-secs", env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(3..))]
    pub shutdown_timeout_secs: u64,
    /// How often the auction board (every auction with its stored standing, what pages and the
    /// API show and bids are checked against) is re-read from MySQL: how stale it may be,
    /// besides this process's own bids, which show at once.
    #[arg(long = "standing-refresh-ms", env = "STANDING_REFRESH_MS", default_value_t = DEFAULT_STANDING_REFRESH_MS,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub standing_refresh_ms: u64,
    /// Log one line per request (`ACCESS_LOG=false` for load tests: the line costs more than
    /// serving a page from the board).
    #[arg(long = "access-log", env = "ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
}

impl Default for Limits {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        Self {
            max_bids_in_flight: DEFAULT_MAX_BIDS_IN_FLIGHT,
            idempotency_keys_max: DEFAULT_IDEMPOTENCY_KEYS_MAX,
            idempotency_key_ttl_secs: DEFAULT_IDEMPOTENCY_KEY_TTL_SECS,
            acked_bids_max: DEFAULT_ACKED_BIDS_MAX,
            database_connect_timeout_ms: DEFAULT_DATABASE_TIMEOUT_MS,
            database_query_timeout_ms: DEFAULT_DATABASE_TIMEOUT_MS,
            shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            standing_refresh_ms: DEFAULT_STANDING_REFRESH_MS,
            access_log: true,
        }
    }
}

/// Of the shutdown time, what is kept for flushing the producer after requests finished.
/// Every request that produced a bid has its ack or its error by then, so the flush only
/// waits for bids whose bidder hung up.
const FLUSH_RESERVE: Duration = Duration::from_secs(2);

/// Asks the site to stop as SIGTERM does: no new connections, requests in flight finish,
/// the producer is flushed, then [`Application::run_until_stopped`] returns.
#[derive(Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
    stop: StopHandle,
    drain: Duration,
}

impl Application {
    /// Checks the settings and credentials against Kafka, the registry and MySQL (a refusal is
    /// an error naming it; see [`preflight`]), connects the clients (lazily: a stack that is
    /// down makes the site unready, not dead) and binds the listener.
    pub async fn build(config: WebConfig) -> anyhow::Result<Self> {
        let endpoints = preflight::Endpoints { kafka: Some(&config.kafka), registry: Some(&config.registry), database: Some(&config.database) };
        preflight::check(endpoints, preflight::STARTUP_CHECK_TIMEOUT).await?;
        let delivery_timeout = Duration::from_millis(config.delivery_timeout_ms);
        let producer = kafka::bid_producer(&config.kafka, delivery_timeout)
            .map_err(|e| anyhow::anyhow!("Failed to create the Kafka producer: {}", kafka::describe(&e)))?;
        let encoder = BidEncoder::new(&config.registry, &config.kafka.topic).context("Failed to set up the schema registry client")?;
        let pool = db::pool(&config.database).with_context(|| format!("Invalid DATABASE_URL {}", config.database.redacted_url()))?;
        let http = auction_common::registry::http_client(&config.registry).map_err(anyhow::Error::msg)?;

        let limits = &config.limits;
        let timeouts = StoreTimeouts {
            connect: Duration::from_millis(limits.database_connect_timeout_ms),
            query: Duration::from_millis(limits.database_query_timeout_ms),
        };
        // The runtime `build` runs on (the binary's main one) serves MySQL to every worker.
        let store = Arc::new(Store::new(pool, timeouts, tokio::runtime::Handle::current()));
        let board = Arc::new(Board::new(
            Arc::clone(&store),
            BoardSettings { refresh: Duration::from_millis(limits.standing_refresh_ms), pending_max: limits.acked_bids_max },
        ));
        // On the main runtime, like the store; it ends once the board is dropped.
        board.spawn_refresh();
        let publisher = BidPublisher::new(producer, encoder, config.kafka.topic.clone());
        let bidding_limits = BiddingLimits {
            max_bids_in_flight: limits.max_bids_in_flight,
            idempotency_keys_max: limits.idempotency_keys_max,
            idempotency_key_ttl: Duration::from_secs(limits.idempotency_key_ttl_secs),
            acked_bids_max: limits.acked_bids_max,
            turn_wait: delivery_timeout,
        };
        let web_metrics = web::Data::new(WebMetrics::new().context("Failed to register the metrics")?);
        let state = web::Data::new(AppState {
            bidding: Arc::new(Bidding::new(Arc::clone(&store), Arc::clone(&board), publisher, &bidding_limits, web_metrics.clone().into_inner())),
            board,
            store,
            templates: Templates::new().context("Failed to load the templates")?,
            readiness: Readiness { kafka: config.kafka.clone(), registry_url: config.registry.url.clone(), http },
            home_pages: Default::default(),
            home_listing: Default::default(),
        });
        prepare_in_background(state.clone(), config.kafka.clone());
        let (stop, mut stopped) = watch::channel(false);
        // One feed for every open page, and its health figures, on the main runtime.
        let feed = Feed::new(stopped.clone());
        let health = health::spawn(Arc::clone(&state.store), config.kafka.clone(), config.dashboard.clone(), stopped.clone());
        feed.spawn_board(Arc::clone(&state.board), health);
        feed.spawn_bids(config.kafka.clone(), config.registry.clone());
        let feed = web::Data::new(feed);
        let front_door = web::Data::new(FrontDoor::new(&config.security));
        // Creating auctions is rare: two connections of its own are plenty.
        let admin_pool = db::pool(&DatabaseConfig { max_connections: 2, ..config.database.clone() })
            .with_context(|| format!("Invalid DATABASE_URL {}", config.database.redacted_url()))?;
        let writer = AuctionWriter::new(
            admin_pool,
            Duration::from_millis(limits.database_connect_timeout_ms),
            Duration::from_millis(limits.database_query_timeout_ms),
            tokio::runtime::Handle::current(),
        );
        let admin = web::Data::new(Admin::new(&config.security.admin_token, writer));

        let listener = TcpListener::bind(&config.bind_addr).with_context(|| format!("Failed to bind {}", config.bind_addr))?;
        let address = listener.local_addr()?;
        let app_state = state.clone();
        let access_log = limits.access_log;
        let drain = Duration::from_secs(limits.shutdown_timeout_secs).saturating_sub(FLUSH_RESERVE).max(Duration::from_secs(1));
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(front_door.clone())
                .app_data(admin.clone())
                .app_data(feed.clone())
                .app_data(web_metrics.clone())
                .wrap(middleware::from_fn(security::limit_body))
                // Outside the body limit, which refuses an oversized bid before any route.
                .wrap(middleware::from_fn(metrics::count_refusals))
                .wrap(security::headers())
                .wrap(middleware::Condition::new(
                    access_log,
                    middleware::Logger::new("%a \"%r\" %s %Dms").exclude("/healthz").exclude("/readyz").exclude("/metrics"),
                ))
                .configure(routes)
        })
        // actix-server stops gracefully on SIGTERM but abruptly on SIGINT (Ctrl-C), dropping
        // requests whose bid may already be in Kafka; both go through the stop handle instead.
        .shutdown_signal(async move {
            if stopped.wait_for(|stop| *stop).await.is_err() {
                // Every handle is gone: nothing can ask for a stop any more.
                std::future::pending::<()>().await;
            }
        })
        .shutdown_timeout(drain.as_secs())
        .listen(listener)?;
        if let Some(workers) = config.http_workers {
            server = server.workers(workers);
        }
        Ok(Self { address, server: server.run(), state, stop: StopHandle(Arc::new(stop)), drain })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until SIGTERM, SIGINT or the stop handle; then stops accepting, lets requests in
    /// flight finish (up to the shutdown timeout less the flush reserve), and flushes what the
    /// producer still holds.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let signals = tokio::spawn(stop_on_signal(self.stop.clone(), self.drain));
        let served = self.server.await;
        signals.abort();
        self.state.bidding.publisher().flush(FLUSH_RESERVE);
        log::info!("auction-web stopped");
        Ok(served?)
    }
}

async fn stop_on_signal(stop: StopHandle, drain: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot listen for SIGTERM/SIGINT, so they would stop the site abruptly: {e}");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!("{name}: no new connections; requests in flight may finish for {drain:?}, then the producer is flushed");
    stop.stop();
}

/// Every route of the site, in one place.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::FormConfig::default().limit(16 * 1024))
        .app_data(web::PayloadConfig::default().limit(16 * 1024))
        .route("/", web::get().to(pages::home))
        .route("/auctions/{id}", web::get().to(pages::auction))
        .service(web::resource("/auctions/{id}/bids").wrap(middleware::from_fn(security::limit_bids)).route(web::post().to(pages::place_bid)))
        .route("/static/site.css", web::get().to(pages::stylesheet))
        .route("/static/site.js", web::get().to(pages::script))
        .route("/static/live.js", web::get().to(pages::live_script))
        .route("/dashboard", web::get().to(pages::dashboard))
        .route("/api/feed", web::get().to(feed::events))
        .route("/admin", web::get().to(admin::page))
        .route("/admin/auctions", web::post().to(admin::create_from_form))
        .route("/api/auctions", web::post().to(admin::create_auction))
        .route("/api/auctions", web::get().to(api::list_auctions))
        .route("/api/auctions/{id}", web::get().to(api::get_auction))
        // Before the POST resource: a resource without a method guard answers 405 to any other method.
        .route("/api/auctions/{id}/bids", web::get().to(api::recent_bids))
        .service(web::resource("/api/auctions/{id}/bids").wrap(middleware::from_fn(security::limit_bids)).route(web::post().to(api::place_bid)))
        .route("/api/bids/{bid_id}", web::get().to(api::get_bid))
        .route("/healthz", web::get().to(api::healthz))
        .route("/readyz", web::get().to(api::readyz))
        .route("/metrics", web::get().to(metrics::metrics));
}

/// Creates the topic and registers the schema, retrying until both succeed, so the site can
/// start before the stack and the first bid pays no registration round trip.
fn prepare_in_background(state: web::Data<AppState>, kafka_config: KafkaConfig) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let topic = kafka::ensure_topic(&kafka_config).await;
            let schema = state.bidding.publisher().register_schema().await;
            match (&topic, &schema) {
                (Ok(()), Ok(id)) => {
                    log::info!("topic {} ready, schema id {id}", kafka_config.topic);
                    return;
                }
                _ => log::warn!(
                    "not ready yet (topic: {:?}, schema: {:?}); retrying in {delay:?}",
                    topic.err(),
                    schema.err().map(|e| e.to_string())
                ),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{Limits, WebConfig};
    use clap::{CommandFactory, Parser};

    #[test]
    fn every_setting_has_a_flag_and_the_defaults_point_at_the_local_stack() {
        WebConfig::command().debug_assert();
        let config = WebConfig::try_parse_from(["auction-web"]).unwrap();
        assert_eq!(config.bind_addr, "127.0.0.1:8080");
        assert_eq!(config.registry.url, "http://127.0.0.1:8081/apis/ccompat/v7");
        assert_eq!(config.database.url, "mysql://auction:auction@127.0.0.1:3306/auction");
        let config = WebConfig::try_parse_from(["auction-web", "--schema-registry-url", "http://r", "--database-url", "mysql://d"]).unwrap();
        assert_eq!((config.registry.url.as_str(), config.database.url.as_str()), ("http://r", "mysql://d"));
    }

    #[test]
    fn limits_default_to_the_flags_defaults() {
        let parsed = WebConfig::try_parse_from(["auction-web"]).expect("defaults parse").limits;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Limits::default()));
        assert!(WebConfig::try_parse_from(["auction-web", "--database-query-timeout-ms", "0"]).is_err());
    }
}
