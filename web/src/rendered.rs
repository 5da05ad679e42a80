//! Pages rendered once and served many times: a page that shows only the board (no form, no
//! token, nothing about the visitor) is the same for every visitor within one second of the
//! clock, so `/` is rendered at most once a second per page, however many requests and bids come
//! in (the live feed moves the open pages meanwhile), and the board's auctions are listed and
//! sorted at most once a second for all pages ([`PerSecond`]).
//!
//! The server's clock on the page (`data-server-now-ms`, from which the countdowns follow the
//! server and not the browser) must be exact for each response, not for the render: the page is
//! kept in two halves around it and the current time is put between them on every response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Put into the template as `server_now_ms` when a page is rendered for the cache; each
/// response replaces it with the time it is sent.
pub const NOW_MS_MARK: &str = "\u{1}server-now-ms\u{1}";

/// Most pages kept (one per page number asked for in the current second).
const PAGES_MAX: usize = 64;

/// A rendered page around its one time mark.
pub struct Rendered {
    before: String,
    after: String,
}

impl Rendered {
    /// `html` must hold [`NOW_MS_MARK`] once (a page without it is served as it is).
    pub fn new(html: String) -> Self {
        match html.split_once(NOW_MS_MARK) {
            Some((before, after)) => Self { before: before.to_owned(), after: after.to_owned() },
            None => Self { before: html, after: String::new() },
        }
    }

    /// The page as sent at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> String {
        let now_ms = now.timestamp_millis().to_string();
        let mut page = String::with_capacity(self.before.len() + now_ms.len() + self.after.len());
        page.push_str(&self.before);
        if !self.after.is_empty() {
            page.push_str(&now_ms);
        }
        page.push_str(&self.after);
        page
    }
}

/// Pages keyed by a number (the page of a list), valid for one second of the clock.
#[derive(Default)]
pub struct PageCache {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    second: i64,
    pages: HashMap<u32, Arc<Rendered>>,
}

impl PageCache {
    /// The page `key` at `now`, rendered by `render` if this second has none yet. Two workers
    /// missing at once both render; the later one is kept.
    pub fn get_or_render<E>(&self, key: u32, now: DateTime<Utc>, render: impl FnOnce() -> Result<String, E>) -> Result<Arc<Rendered>, E> {
        let second = now.timestamp();
        {
            let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.second == second {
                if let Some(page) = slot.pages.get(&key) {
                    return Ok(Arc::clone(page));
                }
            }
        }
        let page = Arc::new(Rendered::new(render()?));
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.second != second {
            *slot = Slot { second, pages: HashMap::new() };
        }
        if slot.pages.len() < PAGES_MAX {
            slot.pages.insert(key, Arc::clone(&page));
        }
        Ok(page)
    }
}

/// A value made at most once a second of the clock (the board's auctions listed and sorted).
pub struct PerSecond<T> {
    slot: Mutex<Option<(i64, Arc<T>)>>,
}

impl<T> Default for PerSecond<T> {
    fn default() -> Self {
        Self { slot: Mutex::new(None) }
    }
}

impl<T> PerSecond<T> {
    pub fn get_or_make(&self, now: DateTime<Utc>, make: impl FnOnce() -> T) -> Arc<T> {
        let second = now.timestamp();
        if let Some((at, value)) = self.slot.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            if *at == second {
                return Arc::clone(value);
            }
        }
        let value = Arc::new(make());
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((second, Arc::clone(&value)));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64, ms: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, ms * 1_000_000).single().expect("valid time")
    }

    #[test]
    fn each_response_carries_the_time_it_is_sent_not_the_time_it_was_rendered() {
        let page = Rendered::new(format!("<body data-server-now-ms=\"{NOW_MS_MARK}\">x</body>"));
        assert_eq!(page.at(at(1_700_000_000, 250)), "<body data-server-now-ms=\"1700000000250\">x</body>");
        assert_eq!(page.at(at(1_700_000_000, 900)), "<body data-server-now-ms=\"1700000000900\">x</body>");
    }

    #[test]
    fn a_page_is_rendered_again_only_when_the_second_changes() {
        let cache = PageCache::default();
        let mut renders = 0;
        let mut get = |key, now| {
            cache
                .get_or_render(key, now, || {
                    renders += 1;
                    Ok::<_, ()>(format!("render {renders}"))
                })
                .expect("renders")
                .at(now)
        };
        assert_eq!(get(1, at(100, 0)), "render 1");
        assert_eq!(get(1, at(100, 999)), "render 1");
        assert_eq!(get(2, at(100, 999)), "render 2");
        assert_eq!(get(1, at(101, 0)), "render 3");
        let listed = PerSecond::default();
        let mut makes = 0;
        let mut list = |now| *listed.get_or_make(now, || { makes += 1; makes });
        assert_eq!((list(at(100, 0)), list(at(100, 500)), list(at(101, 0))), (1, 1, 2));
    }
}
