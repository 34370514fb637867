//! `ApiRouter`: the only way a route is added, so the route table is known.
//!
//! axum cannot list its routes, yet `openapi.yaml` must agree with the
//! router exactly (an undocumented endpoint is an unreviewed attack
//! surface). Every feature registers its routes here with their
//! `operationId`, and a test compares this table with the spec both ways.

use crate::state::AppState;
use axum::{
    handler::Handler,
    http::Method,
    routing::{on, MethodFilter},
    Router,
};

/// One routed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub operation_id: &'static str,
    /// The handler function's name (the last segment of its type name),
    /// which must equal `operation_id` (checked by a test).
    pub handler: &'static str,
}

#[derive(Default)]
pub struct ApiRouter {
    router: Router<AppState>,
    table: Vec<RouteSpec>,
}

/// The name of a function item type: `crate::admin::accounts::admin_list_users`
/// gives `admin_list_users` (a closure gives `{{closure}}`).
fn fn_name<H>() -> &'static str {
    let full = std::any::type_name::<H>();
    let path = full.split('<').next().unwrap_or(full);
    path.rsplit("::").next().unwrap_or(path)
}

impl ApiRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method path` handled by `handler`, whose name must equal
    /// `operation_id` (docs/architecture.md: handlers are named after their
    /// operation).
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // Only standard methods are routed; an unknown one would be a
        // programming error caught by the route-table test.
        if let Ok(filter) = MethodFilter::try_from(method.clone()) {
            self.router = self.router.route(path, on(filter, handler));
            self.table.push(RouteSpec {
                method,
                path,
                operation_id,
                handler: fn_name::<H>(),
            });
        }
        self
    }

    pub fn merge(mut self, other: ApiRouter) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    pub fn table(&self) -> &[RouteSpec] {
        &self.table
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteSpec>) {
        (self.router, self.table)
    }
}
