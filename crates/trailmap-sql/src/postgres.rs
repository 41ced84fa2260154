//! The PostgreSQL wire protocol endpoint: `psql` and BI tools query an [`Analyst`].
//!
//! `datafusion-postgres` speaks the protocol (over `pgwire`) and provides `pg_catalog`
//! (`pg_class`, `pg_attribute`, … built from the session's tables), so `\dt` and `\d events`
//! work. trailmap adds three things on top:
//! - login: SCRAM-SHA-256 with the configured user and password; with no password, logins
//!   are accepted without one, which [`serve`] allows on a loopback address only;
//! - simple-protocol queries (what `psql` sends) run through [`Analyst::query`], so they are
//!   read-only and bounded by the timeout and the memory pool;
//! - extended-protocol queries (drivers with parameters) are checked read-only here and run
//!   by `datafusion-postgres` in the same session: the memory pool bounds them, and the
//!   client's own `statement_timeout` applies rather than `[sql] timeout`.

use crate::{Analyst, CANCELLED, READ_ONLY, read_only};
use async_trait::async_trait;
use datafusion::catalog::MemTable;
use datafusion::common::{DataFusionError, ParamValues};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, NoopHandler, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, QueryHook};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Who may log in.
#[derive(Clone, Debug)]
pub struct Login {
    pub user: String,
    /// `None`: no password is asked (loopback only).
    pub password: Option<String>,
}

/// Serves `analyst` on `listener` until the task is dropped.
///
/// Refuses a login without password on an address other than loopback: the endpoint would
/// hand every table to anyone who can reach the port.
pub async fn serve(
    analyst: Arc<Analyst>,
    listener: TcpListener,
    login: Login,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    if login.password.is_none() && !address.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "the PostgreSQL endpoint on {address} needs a password: set [server] \
             postgres_password in the config, or bind to 127.0.0.1"
        )));
    }
    setup_pg_catalog(&analyst.ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| std::io::Error::other(format!("cannot set up pg_catalog: {e}")))?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        // First: the hooks after it would run `SET datafusion.…` and cursors on the shared
        // session, outside the read-only check.
        Arc::new(GuardHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
        // Last: the hooks above answer SET, SHOW, BEGIN, … themselves.
        Arc::new(AnalystHook {
            analyst: analyst.clone(),
        }),
    ];
    let session = Arc::new(DfSessionService::new_with_hooks(
        Arc::new(analyst.ctx.clone()),
        hooks,
    ));
    let connections = Arc::new(ConnectionManager::new());
    loop {
        let (socket, peer) = listener.accept().await?;
        let session = session.clone();
        let connections = connections.clone();
        let login = login.clone();
        tokio::spawn(async move {
            let result = match login.password {
                Some(password) => {
                    let handlers = Arc::new(ScramHandlers {
                        session,
                        connections,
                        user: login.user,
                        password,
                    });
                    process_socket(socket, None, handlers).await
                }
                None => process_socket(socket, None, Arc::new(OpenHandlers { session })).await,
            };
            if let Err(e) = result {
                eprintln!("postgres connection from {peer}: {e}");
            }
        });
    }
}

/// Binds `address` (port 0 picks a free one) and says where it listens.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen for PostgreSQL clients on {address}: {e}; pick another port with \
                 --postgres-port or [server] postgres_port"
            ),
        )
    })
}

fn error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

/// The SQLSTATE for an analyst error.
fn sql_error(e: DataFusionError) -> PgWireError {
    let message = e.to_string();
    let code = if message.contains(READ_ONLY) {
        "25006" // read_only_sql_transaction
    } else if message.contains(CANCELLED) {
        "57014" // query_canceled
    } else if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        "53200" // out_of_memory
    } else if matches!(
        e.find_root(),
        DataFusionError::Plan(_) | DataFusionError::SQL(..) | DataFusionError::SchemaError(..)
    ) {
        "42000" // syntax_error_or_access_rule_violation
    } else {
        "XX000" // internal_error
    };
    error(code, message)
}

/// Session settings clients may change: what drivers and psql set on connect. Everything
/// else (DataFusion's own settings: memory pool, spill directory, …) stays as configured.
const CLIENT_SETTINGS: [&str; 11] = [
    "statement_timeout",
    "datestyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "bytea_output",
    "intervalstyle",
    "client_encoding",
    "client_min_messages",
    "time",
    "timezone",
];

/// Why a statement is refused before any other hook sees it, if it is.
fn guard(statement: &Statement) -> Option<PgWireError> {
    let text = statement.to_string();
    let mut words = text
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase);
    match words.next().as_deref() {
        Some("set") => {
            let mut name = words.next()?;
            if matches!(name.as_str(), "session" | "local") {
                name = words.next()?;
            }
            let name = name.trim_matches('"');
            (!CLIENT_SETTINGS.contains(&name)).then(|| {
                error(
                    "25006",
                    format!(
                        "{READ_ONLY}: `SET {name}` is not allowed; the server's settings come \
                         from its config"
                    ),
                )
            })
        }
        Some("declare") => Some(error(
            "25006",
            format!("{READ_ONLY}: cursors are not supported; run the SELECT itself"),
        )),
        _ => None,
    }
}

/// Refuses settings and cursors that would escape the analyst's session rules.
struct GuardHook;

#[async_trait]
impl QueryHook for GuardHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        guard(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        guard(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        guard(statement).map(Err)
    }
}

/// Runs what `psql` sends through the analyst's limits; refuses writes on the extended path.
struct AnalystHook {
    analyst: Arc<Analyst>,
}

#[async_trait]
impl QueryHook for AnalystHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // The text `datafusion-postgres` would run: its parser already rewrote psql's
        // catalog idioms (`::regclass`, `OPERATOR(pg_catalog.~)`).
        let sql = statement.to_string();
        let batches = match self.analyst.query(&sql).await {
            Ok(batches) => batches,
            Err(e) => return Some(Err(sql_error(e))),
        };
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty()));
        let frame = match MemTable::try_new(schema, vec![batches])
            .and_then(|table| ctx.read_table(Arc::new(table)))
        {
            Ok(frame) => frame,
            Err(e) => return Some(Err(sql_error(e))),
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Some(
            encode_dataframe(frame, &Format::UnifiedText, Some(options))
                .await
                .map(Response::Query),
        )
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        read_only()
            .verify_plan(plan)
            .err()
            .map(|e| Err(error("25006", format!("{READ_ONLY}: {e}"))))
    }
}

/// Logins with the configured user and password, by SCRAM-SHA-256.
#[derive(Debug)]
struct Credentials {
    user: String,
    password: String,
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        if user != self.user {
            return Err(PgWireError::InvalidPassword(user.to_owned()));
        }
        let salt: [u8; 16] = rand::random();
        Ok(Password::new(
            Some(salt.to_vec()),
            gen_salted_password(&self.password, &salt, 4096),
        ))
    }
}

struct ScramHandlers {
    session: Arc<DfSessionService>,
    connections: Arc<ConnectionManager>,
    user: String,
    password: String,
}

impl PgWireServerHandlers for ScramHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // One per connection: a handler holds the login in progress.
        let mut scram = ScramAuth::new(Arc::new(Credentials {
            user: self.user.clone(),
            password: self.password.clone(),
        }));
        scram.set_iterations(4096);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.default_transaction_read_only = true;
        Arc::new(SASLAuthStartupHandler::new(Arc::new(parameters)).with_scram(scram))
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

/// No password asked (loopback only, as in `trailmap demo`).
struct OpenHandlers {
    session: Arc<DfSessionService>,
}

impl PgWireServerHandlers for OpenHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(NoopHandler)
    }
}
