//! What every paged listing takes besides its filter (sort key, order, page) and how it ends
//! its query; the listings differ only in their filter and their sort keys.

use sqlx::{QueryBuilder, Sqlite};

/// One page of a listing, with the total the filter matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

impl Order {
    fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }
}

/// A listing's sort key.
pub trait SortKey: Copy {
    /// The columns a listing sorted by this key orders by, most significant first, the last
    /// one unique so that pages neither overlap nor skip.
    fn columns(self) -> &'static [&'static str];
}

/// How a listing is sorted and which page of it is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listing<S> {
    pub sort: S,
    pub order: Order,
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
}

impl<S: SortKey> Listing<S> {
    /// End a listing's query: the sort key's columns, each in the listing's order, then the
    /// page.
    pub(crate) fn push_order_and_page(&self, b: &mut QueryBuilder<Sqlite>) {
        let order = self.order.sql();
        let keys: Vec<String> = (self.sort.columns().iter())
            .map(|c| format!("{c} {order}"))
            .collect();
        // 1-based page and its size, clamped to 1..=100 as Leap0 allows.
        let size = i64::from(self.page_size.clamp(1, 100));
        let offset = (i64::from(self.page.max(1)) - 1).saturating_mul(size);
        b.push(format!(" ORDER BY {}", keys.join(", ")))
            .push(" LIMIT ")
            .push_bind(size)
            .push(" OFFSET ")
            .push_bind(offset);
    }
}
