//! Automation commands for tenants, users and API clients. They work on the same data
//! directory or config as the server, also while it runs, and print JSON with `--json`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use telesafe_core::identity::clients::{self, ClientRepository, Scope};
use telesafe_core::identity::{
    AuthEvent, AuthEventKind, AuthEventRepository, DisplayName, Email, PLATFORM_SLUG, Role,
    SessionRepository, TenantRepository, TenantSlug, UserRepository, UserStatus, activation,
    platform,
};
use telesafe_core::{Clock, SystemClock, TenantId};
use telesafe_store::Store;

use crate::Overrides;

#[derive(Args, Debug)]
pub struct Output {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant (an organisation with its own users, patients and keys).
    Create {
        /// Organisation code people type at sign-in: 2-40 of a-z, 0-9, '-'.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account and print its one-time activation link.
    Create {
        #[arg(long)]
        tenant: String,
        /// patient, clinician, nurse, front-desk, security-officer or tenant-admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        email: String,
        /// The person's name as staff should see it.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
    /// List a tenant's accounts.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
    /// Lock an account: it cannot sign in, and its sessions end now.
    Lock(UserRef),
    /// Unlock an account (also clears its failed sign-in count).
    Unlock(UserRef),
}

#[derive(Args, Debug)]
pub struct UserRef {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    email: String,
    #[command(flatten)]
    overrides: Overrides,
    #[command(flatten)]
    out: Output,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register an API client (OAuth 2.0 client credentials); prints its id and secret once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// A granted scope, such as system/Patient.read; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
    /// List a tenant's API clients.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
    /// Revoke a client: its tokens stop working at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
}

async fn open(o: &Overrides) -> anyhow::Result<(Store, telesafe_server::config::Config)> {
    let cfg = o.load()?;
    let problems = cfg.validate();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!("the configuration has problems; see `telesafe config check`");
    }
    let store = Store::open(&cfg.database_url(), 2).await.context("opening the database")?;
    Ok((store, cfg))
}

async fn tenant_id(store: &Store, slug: &str) -> anyhow::Result<TenantId> {
    let slug = TenantSlug::parse(slug)?;
    Ok(store.tenant_by_slug(&slug).await?.with_context(|| format!("no tenant {slug}"))?.id)
}

fn print(out: &Output, value: serde_json::Value, text: impl FnOnce() -> String) {
    if out.json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Create a platform operator and print their one-time activation link. Operators
    /// sign in with the organisation code "platform", create organisations, and see no
    /// organisation's people or patients.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        overrides: Overrides,
        #[command(flatten)]
        out: Output,
    },
}

pub async fn operator(cmd: OperatorCommand) -> anyhow::Result<ExitCode> {
    let OperatorCommand::Create { email, name, overrides, out } = cmd;
    let (store, cfg) = open(&overrides).await?;
    let now = SystemClock.now();
    let (user, token) =
        platform::create_operator(&store, DisplayName::parse(&name)?, Email::parse(&email)?, now)
            .await
            .map_err(|e| match e {
                telesafe_core::RepoError::Conflict => {
                    anyhow::anyhow!("an operator with that email already exists")
                }
                e => e.into(),
            })?;
    let link = format!("{}/activate/{}", cfg.public_base(), token.reveal());
    print(
        &out,
        json!({"id": user.id.to_string(), "role": user.role.as_str(), "activation_link": link,
               "expires_at": now.plus(activation::ACTIVATION_LIFETIME).to_rfc3339()}),
        || {
            format!(
                "Created platform operator {}.\nOne-time activation link (valid 72 hours):\n  {link}\n\
                 They sign in with the organisation code \"{PLATFORM_SLUG}\".",
                user.id
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn tenant(cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::Create { slug, name, overrides, out } => {
            let (store, _) = open(&overrides).await?;
            let t = platform::create_tenant(
                &store,
                TenantSlug::parse(&slug)?,
                DisplayName::parse(&name)?,
                SystemClock.now(),
            )
            .await?;
            print(
                &out,
                json!({"id": t.id.to_string(), "slug": t.slug.as_str(), "name": t.name.as_str()}),
                || format!("Created tenant {} ({})", t.slug, t.id),
            );
        }
        TenantCommand::List { overrides, out } => {
            let (store, _) = open(&overrides).await?;
            let tenants = store.list_tenants().await?;
            let rows: Vec<_> = tenants
                .iter()
                .map(|t| json!({"id": t.id.to_string(), "slug": t.slug.as_str(), "name": t.name.as_str()}))
                .collect();
            print(&out, json!(rows), || {
                tenants
                    .iter()
                    .map(|t| format!("{:<24} {}  {}", t.slug, t.id, t.name.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Create { tenant, role, email, name, overrides, out } => {
            let (store, cfg) = open(&overrides).await?;
            let slug = TenantSlug::parse(&tenant)?;
            let tenant = tenant_id(&store, &tenant).await?;
            let role: Role = role.parse().map_err(|_| {
                anyhow::anyhow!("unknown role; use patient, clinician, nurse, front-desk, security-officer or tenant-admin")
            })?;
            if !role.allowed_in(&slug) {
                bail!(
                    "a {} cannot be in tenant {slug}; platform operators are created with \
                     `telesafe operator create` and only they belong to the platform",
                    role.as_str()
                );
            }
            let now = SystemClock.now();
            let (user, token) = activation::create_pending_account(
                &store,
                tenant,
                role,
                DisplayName::parse(&name)?,
                Email::parse(&email)?,
                now,
            )
            .await
            .map_err(|e| match e {
                telesafe_core::RepoError::Conflict => {
                    anyhow::anyhow!("an account with that email already exists")
                }
                e => e.into(),
            })?;
            let link = format!("{}/activate/{}", cfg.public_base(), token.reveal());
            print(
                &out,
                json!({"id": user.id.to_string(), "role": role.as_str(), "activation_link": link,
                       "expires_at": now.plus(activation::ACTIVATION_LIFETIME).to_rfc3339()}),
                || {
                    format!(
                        "Created {} {}.\nOne-time activation link (valid 72 hours):\n  {link}",
                        role.label().to_lowercase(),
                        user.id
                    )
                },
            );
        }
        UserCommand::List { tenant, overrides, out } => {
            let (store, _) = open(&overrides).await?;
            let tenant = tenant_id(&store, &tenant).await?;
            let users = store.list_users(tenant).await?;
            let rows: Vec<_> = users
                .iter()
                .map(|u| json!({"id": u.id.to_string(), "email": u.email.as_str(), "name": u.display_name.as_str(),
                                "role": u.role.as_str(), "status": u.status.as_str()}))
                .collect();
            print(&out, json!(rows), || {
                users
                    .iter()
                    .map(|u| {
                        format!(
                            "{:<36} {:<17} {:<8} {}",
                            u.email,
                            u.role.as_str(),
                            u.status.as_str(),
                            u.id
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCommand::Lock(r) => set_lock(r, true).await?,
        UserCommand::Unlock(r) => set_lock(r, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_lock(r: UserRef, lock: bool) -> anyhow::Result<()> {
    let (store, _) = open(&r.overrides).await?;
    let tenant = tenant_id(&store, &r.tenant).await?;
    let user =
        store.user_by_email(tenant, &Email::parse(&r.email)?).await?.context("no such account")?;
    let now = SystemClock.now();
    let (status, kind) = if lock {
        (UserStatus::Locked, AuthEventKind::AccountLocked)
    } else {
        (UserStatus::Active, AuthEventKind::AccountUnlocked)
    };
    if !lock && user.password_hash.is_none() {
        bail!("this account was never activated; create a new activation link instead");
    }
    store.set_user_status(tenant, user.id, status).await?;
    if lock {
        store.delete_sessions_of_user(tenant, user.id, None).await?;
    }
    store.record_auth_event(&AuthEvent::new(tenant, now, kind, Some(user.id), "", "admin")).await?;
    tracing::warn!(security_event = kind.as_str(), user = %user.id, "account status changed by an administrator");
    print(&r.out, json!({"id": user.id.to_string(), "status": status.as_str()}), || {
        format!("{} is now {}", user.id, status.as_str())
    });
    Ok(())
}

pub async fn client(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Create { tenant, name, scopes, overrides, out } => {
            let (store, _) = open(&overrides).await?;
            let tenant = tenant_id(&store, &tenant).await?;
            let scopes = Scope::parse_list(&scopes.join(" ")).context("a scope is malformed")?;
            let reg =
                clients::register_client(&store, tenant, &name, scopes, SystemClock.now()).await?;
            let scope = Scope::join(&reg.client.scopes);
            print(
                &out,
                json!({"client_id": reg.client.client_id, "client_secret": reg.secret.reveal(), "scope": scope}),
                || {
                    format!(
                        "Client id:     {}\nClient secret: {}  (shown only now)\nScopes:        {scope}",
                        reg.client.client_id,
                        reg.secret.reveal()
                    )
                },
            );
        }
        ClientCommand::List { tenant, overrides, out } => {
            let (store, _) = open(&overrides).await?;
            let tenant = tenant_id(&store, &tenant).await?;
            let list = store.list_clients(tenant).await?;
            let rows: Vec<_> = list
                .iter()
                .map(|c| json!({"client_id": c.client_id, "name": c.name, "scope": Scope::join(&c.scopes),
                                "revoked": c.revoked_at.is_some()}))
                .collect();
            print(&out, json!(rows), || {
                list.iter()
                    .map(|c| {
                        let state = if c.revoked_at.is_some() { "revoked" } else { "active" };
                        format!(
                            "{}  {:<8} {}  [{}]",
                            c.client_id,
                            state,
                            c.name,
                            Scope::join(&c.scopes)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ClientCommand::Revoke { tenant, client_id, overrides, out } => {
            let (store, _) = open(&overrides).await?;
            let tenant = tenant_id(&store, &tenant).await?;
            if !store.revoke_client(tenant, &client_id, SystemClock.now()).await? {
                bail!("no active client {client_id} in that tenant");
            }
            print(&out, json!({"client_id": client_id, "revoked": true}), || {
                format!("Revoked {client_id}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
