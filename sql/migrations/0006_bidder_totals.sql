-- Each bidder (by exact name) over every auction, kept by the db-writer in the same transaction
-- as the bid rows, counting only rows actually inserted. The top bidders (the dashboard, every
-- 10 s) are then the last entries of an index instead of a GROUP BY over bidder_activity, whose
-- rows grow with bidders times auctions.
CREATE TABLE bidder_totals (
  name          VARCHAR(100)    CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  bids          BIGINT UNSIGNED NOT NULL,
  highest_price DECIMAL(12, 2)  NOT NULL,
  last_bid_ts   DATETIME(6)     NOT NULL COMMENT 'UTC',
  PRIMARY KEY (name),
  KEY ix_bidder_totals_bids (bids, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The bids already stored (an existing install).
INSERT INTO bidder_totals (name, bids, highest_price, last_bid_ts)
SELECT name, SUM(bids), MAX(highest_price), MAX(last_bid_ts) FROM bidder_activity GROUP BY name;
