-- Auctions and bids. `bid` is the seed system's table (name, price, bid_ts) plus ids,
-- so reports built on the seed keep working.
CREATE TABLE auction (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  title      VARCHAR(200)    NOT NULL,
  created_at DATETIME(6)     NOT NULL DEFAULT (UTC_TIMESTAMP(6)) COMMENT 'UTC',
  closed_at  DATETIME(6)     NULL COMMENT 'UTC; NULL while the auction is open'
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE bid (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  bid_id     CHAR(36)        NOT NULL COMMENT 'UUID given by the site; writes are idempotent on it',
  auction_id BIGINT UNSIGNED NOT NULL,
  name       VARCHAR(100)    NOT NULL,
  price      DECIMAL(12, 2)  NOT NULL,
  bid_ts     DATETIME(6)     NOT NULL COMMENT 'UTC, when the site accepted the bid',
  UNIQUE KEY uq_bid_bid_id (bid_id),
  -- Serves "highest bid of an auction": greatest price, earliest bid on a tie.
  KEY ix_bid_auction_highest (auction_id, price DESC, bid_ts ASC, id ASC)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT INTO auction (id, title) VALUES (1, 'The first auction');
