-- Views for analysts (Power BI, any SQL client). The highest bid is the greatest price,
-- the earliest bid_ts winning a tie.
CREATE VIEW auction_highest_bid AS
SELECT auction_id, bid_id, name, price, bid_ts
FROM (
  SELECT b.auction_id, b.bid_id, b.name, b.price, b.bid_ts,
         ROW_NUMBER() OVER (PARTITION BY b.auction_id ORDER BY b.price DESC, b.bid_ts ASC, b.id ASC) AS rn
  FROM bid b
) ranked
WHERE rn = 1;

CREATE VIEW auction_summary AS
SELECT a.id AS auction_id, a.title, a.created_at, a.closed_at,
       COALESCE(s.bid_count, 0) AS bid_count, s.first_bid_ts, s.last_bid_ts,
       h.price AS highest_price, h.name AS highest_bidder, h.bid_ts AS highest_bid_ts
FROM auction a
LEFT JOIN (
  SELECT auction_id, COUNT(*) AS bid_count, MIN(bid_ts) AS first_bid_ts, MAX(bid_ts) AS last_bid_ts
  FROM bid GROUP BY auction_id
) s ON s.auction_id = a.id
LEFT JOIN auction_highest_bid h ON h.auction_id = a.id;
