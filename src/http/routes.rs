//! `ApiRouter`: the only way a route is added, so the route table is known.
//!
//! axum cannot list its routes, yet `openapi.yaml` must agree with the
//! router exactly (an undocumented endpoint is an unreviewed attack
//! surface). Every feature registers its routes here with their
//! `operationId` and their rate-limit class, and a test compares this
//! table with the spec both ways (the spec's `x-rate-limit-class` too).
//!
//! The class is a fact of the route, stated where the route is added: the
//! rate-limit layer reads it from this table (`rate_limit::layer::RouteClasses`),
//! so a route added anywhere cannot silently fall into a laxer class.

use crate::{rate_limit::policy::Class, state::AppState};
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
    /// The rate-limit class, or `None` for a route added with
    /// [`ApiRouter::unlimited`] (the probes and the key set, outside `/v1`).
    pub class: Option<Class>,
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
    /// operation), counted in the rate-limit `class`: `Credentials` for
    /// anything that checks a password or a code, `Refresh`, `Reads` for
    /// `GET`, `Writes` for the rest.
    pub fn route<H, T>(
        self,
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        class: Class,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, operation_id, Some(class), handler)
    }

    /// Adds a route that no rate limit counts: only for the operational
    /// endpoints outside `/v1` (probes, the public key set), which must
    /// answer however busy a client is. A test refuses it under `/v1`.
    pub fn unlimited<H, T>(
        self,
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, operation_id, None, handler)
    }

    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        class: Option<Class>,
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
                class,
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
