-- The web's auction board re-reads, every second, the auctions still open and those that ended
-- in the last 7 days (not every auction ever made): these indexes let it read just those, so
-- the refresh costs the same after a hundred thousand auctions as after ten.
CREATE INDEX ix_auction_ends_at ON auction (ends_at);
CREATE INDEX ix_standing_current_ends_at ON auction_standing (current_ends_at);
