-- Bids by time, for the analysts: a time filter on `v_bids` (Power BI's incremental refresh on
-- `bid_ts`, Grafana's $__timeFilter, "the last hour") read every entry of the per-auction index
-- to find the rows in range, about 0.3 s at a million bids and growing with the table; with this
-- index it reads only the range. Measured with `make bench-views` (sql/README.md). Costs the
-- db-writer one more index entry per bid, appended at the end of the index (bids arrive in
-- about `bid_ts` order).
ALTER TABLE bid ADD KEY ix_bid_ts (bid_ts);
