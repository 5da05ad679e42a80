-- Views for analysts (Power BI, any SQL client) that answer in well under a second over
-- millions of bids: each reads a summary the db-writer keeps in the same transaction as the bid
-- rows (counting only rows it inserted), never a scan of `bid`. Documented in sql/README.md.

-- Bids per auction per minute of bid_ts (UTC).
CREATE TABLE bids_per_minute (
  minute     DATETIME        NOT NULL COMMENT 'UTC, the minute a bid was placed in',
  auction_id BIGINT UNSIGNED NOT NULL,
  bids       BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (minute, auction_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- What each bidder (by exact name) did in each auction.
CREATE TABLE bidder_activity (
  name          VARCHAR(100)    CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  auction_id    BIGINT UNSIGNED NOT NULL,
  bids          BIGINT UNSIGNED NOT NULL,
  highest_price DECIMAL(12, 2)  NOT NULL,
  last_bid_ts   DATETIME(6)     NOT NULL COMMENT 'UTC',
  PRIMARY KEY (name, auction_id),
  KEY ix_bidder_activity_auction (auction_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The bids already stored (an existing install).
INSERT INTO bids_per_minute (minute, auction_id, bids)
SELECT DATE_FORMAT(bid_ts, '%Y-%m-%d %H:%i:00'), auction_id, COUNT(*) FROM bid GROUP BY 1, 2;
INSERT INTO bidder_activity (name, auction_id, bids, highest_price, last_bid_ts)
SELECT name, auction_id, COUNT(*), MAX(price), MAX(bid_ts) FROM bid GROUP BY name COLLATE utf8mb4_bin, auction_id;

-- Every bid with its auction's title.
CREATE VIEW v_bids AS
SELECT b.bid_id, b.auction_id, a.title AS auction_title, b.name, b.price, b.bid_ts
FROM bid b JOIN auction a ON a.id = b.auction_id;

-- Per auction: status, counted bids, distinct bidders, highest bid, winner once closed.
CREATE VIEW v_auction_summary AS
SELECT a.id AS auction_id, a.title, a.starting_price, a.min_increment, a.reserve_price,
       LEAST(COALESCE(a.closed_at, COALESCE(s.current_ends_at, a.ends_at)), COALESCE(s.current_ends_at, a.ends_at)) AS ends_at,
       CASE WHEN LEAST(COALESCE(a.closed_at, COALESCE(s.current_ends_at, a.ends_at)), COALESCE(s.current_ends_at, a.ends_at)) > UTC_TIMESTAMP(6)
            THEN 'open' ELSE 'closed' END AS status,
       COALESCE(s.bid_count, 0) AS bids,
       (SELECT COUNT(*) FROM bidder_activity ba WHERE ba.auction_id = a.id) AS distinct_bidders,
       s.highest_price, s.highest_name AS highest_bidder, s.highest_bid_ts,
       CASE WHEN LEAST(COALESCE(a.closed_at, COALESCE(s.current_ends_at, a.ends_at)), COALESCE(s.current_ends_at, a.ends_at)) <= UTC_TIMESTAMP(6)
             AND s.highest_price IS NOT NULL AND (a.reserve_price IS NULL OR s.highest_price >= a.reserve_price)
            THEN s.highest_name END AS winner,
       s.last_bid_ts
FROM auction a LEFT JOIN auction_standing s ON s.auction_id = a.id;

CREATE VIEW v_bids_per_minute AS
SELECT minute, auction_id, bids FROM bids_per_minute;

CREATE VIEW v_top_bidders AS
SELECT name, SUM(bids) AS bids, COUNT(*) AS auctions, MAX(highest_price) AS highest_price, MAX(last_bid_ts) AS last_bid_ts
FROM bidder_activity GROUP BY name;

-- The views of migration 0002 keep their names and columns, now read from the standings
-- instead of ranking every bid: same answers (the standing's leader is the first bid in
-- price DESC, bid_ts ASC, bid_id ASC order), in constant time per auction.
CREATE OR REPLACE VIEW auction_highest_bid AS
SELECT s.auction_id, s.highest_bid_id AS bid_id, s.highest_name AS name, s.highest_price AS price, s.highest_bid_ts AS bid_ts
FROM auction_standing s WHERE s.highest_bid_id IS NOT NULL;

CREATE OR REPLACE VIEW auction_summary AS
SELECT a.id AS auction_id, a.title, a.created_at, a.closed_at,
       COALESCE(s.bid_count, 0) AS bid_count,
       (SELECT MIN(b.bid_ts) FROM bid b WHERE b.auction_id = a.id) AS first_bid_ts, s.last_bid_ts,
       s.highest_price, s.highest_name AS highest_bidder, s.highest_bid_ts
FROM auction a LEFT JOIN auction_standing s ON s.auction_id = a.id;
