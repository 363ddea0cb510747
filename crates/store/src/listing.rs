//! What every paged listing takes besides its filter (sort key, order, page) and how it ends
//! its query; the listings differ only in their filter and their sort keys.

use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, QueryBuilder, Sqlite, SqlitePool};

use crate::Result;

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
    /// The column a listing sorted by this key orders by first, if any; every listing then
    /// orders by `created_at` and, last, by the unique `id`, so that pages neither overlap nor
    /// skip.
    fn lead(self) -> Option<&'static str>;
}

/// What every listing orders by after its sort key's own column.
const TIEBREAK: [&str; 2] = ["created_at", "id"];

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
    /// One page of `org_id`'s rows of `table` that `filter` keeps, sorted and paged as this
    /// listing says, with the total the filter matches. `filter` adds its conditions (each
    /// ` AND …`) once for both the count and the page, so that the two cannot disagree, and the
    /// organisation's scope is written here, for every listing.
    pub(crate) async fn fetch<T>(
        &self,
        pool: &SqlitePool,
        (table, columns): (&str, &str),
        org_id: &str,
        filter: impl Fn(&mut QueryBuilder<Sqlite>),
    ) -> Result<Page<T>>
    where
        T: for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let scoped = |select: &str| {
            let mut b = QueryBuilder::new(format!("SELECT {select} FROM {table} WHERE org_id = "));
            b.push_bind(org_id.to_owned());
            filter(&mut b);
            b
        };
        let total: i64 = scoped("COUNT(*)")
            .build_query_scalar()
            .fetch_one(pool)
            .await?;
        let mut page = scoped(columns);
        self.push_order_and_page(&mut page);
        let items = page.build_query_as().fetch_all(pool).await?;
        Ok(Page { items, total })
    }

    /// End a listing's query: the sort key's column and the tiebreak, each in the listing's
    /// order, then the page.
    fn push_order_and_page(&self, b: &mut QueryBuilder<Sqlite>) {
        let order = self.order.sql();
        let keys: Vec<String> = (self.sort.lead().into_iter().chain(TIEBREAK))
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
