-- Auctions get their rules (issue 6), and each auction a standing row the db-writer keeps in
-- the same transaction as the bid rows, so reading an auction's state costs one primary-key
-- lookup however many bids it has.
ALTER TABLE auction
  ADD COLUMN description    VARCHAR(2000)  NOT NULL DEFAULT '' AFTER title,
  ADD COLUMN starting_price DECIMAL(12, 2) NOT NULL DEFAULT 0.01 COMMENT 'the first bid must be at least this',
  ADD COLUMN min_increment  DECIMAL(12, 2) NOT NULL DEFAULT 0.01 COMMENT 'every later bid at least the highest plus this',
  ADD COLUMN reserve_price  DECIMAL(12, 2) NULL COMMENT 'no winner below it; NULL for none',
  ADD COLUMN ends_at        DATETIME(6)    NULL COMMENT 'UTC; the end before any extension',
  ADD COLUMN extend_seconds INT UNSIGNED   NOT NULL DEFAULT 120 COMMENT 'anti-sniping window; 0 turns it off';

-- Auction 1, the seed's single auction, stays open for 30 days from the install.
UPDATE auction SET ends_at = UTC_TIMESTAMP(6) + INTERVAL 30 DAY WHERE ends_at IS NULL;
ALTER TABLE auction MODIFY ends_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6) + INTERVAL 30 DAY)
  COMMENT 'UTC; the end before any extension';

-- Per auction: the highest counted bid (greatest price, earliest bid_ts on a tie, then the
-- smallest bid_id), how many bids count, the last one, and the end after extensions.
-- Written only by the db-writer, counting only rows it actually inserted.
CREATE TABLE auction_standing (
  auction_id      BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  bid_count       BIGINT UNSIGNED NOT NULL DEFAULT 0,
  highest_bid_id  CHAR(36)        NULL,
  highest_name    VARCHAR(100)    NULL,
  highest_price   DECIMAL(12, 2)  NULL,
  highest_bid_ts  DATETIME(6)     NULL COMMENT 'UTC',
  last_bid_ts     DATETIME(6)     NULL COMMENT 'UTC',
  current_ends_at DATETIME(6)     NOT NULL COMMENT 'UTC; ends_at moved by anti-sniping',
  updated_at      DATETIME(6)     NOT NULL COMMENT 'UTC'
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Standings of the bids already stored (an existing install): every bid counts, as before.
INSERT INTO auction_standing (auction_id, bid_count, highest_bid_id, highest_name, highest_price, highest_bid_ts,
                              last_bid_ts, current_ends_at, updated_at)
SELECT a.id, COALESCE(s.n, 0), h.bid_id, h.name, h.price, h.bid_ts, s.last_ts,
       GREATEST(a.ends_at, COALESCE(s.last_ts + INTERVAL a.extend_seconds SECOND, a.ends_at)), UTC_TIMESTAMP(6)
FROM auction a
LEFT JOIN (SELECT auction_id, COUNT(*) AS n, MAX(bid_ts) AS last_ts FROM bid GROUP BY auction_id) s ON s.auction_id = a.id
LEFT JOIN (
  SELECT auction_id, bid_id, name, price, bid_ts,
         ROW_NUMBER() OVER (PARTITION BY auction_id ORDER BY price DESC, bid_ts ASC, bid_id ASC) AS rn
  FROM bid
) h ON h.auction_id = a.id AND h.rn = 1;

-- An auction's bids by time: its latest bids, and the bids of an anti-sniping window.
ALTER TABLE bid ADD KEY ix_bid_auction_ts (auction_id, bid_ts);
