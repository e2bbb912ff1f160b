//! Who may do what: bearer tokens with scopes for the control API and for broadcasts.
//!
//! Tokens come from two places. The bootstrap set is a JSON file (`--tokens-file`) or the
//! `SWITCHBOARD_TOKENS` environment variable, loaded once at start; the rest are created and
//! revoked at runtime through `/v1/tokens` by a token with `admin`, kept in the replicated state
//! (digests only) and honoured by every node as soon as it applies the change. Revoking a name of
//! the bootstrap set disables that token on every node too. The file:
//!
//! ```json
//! {"tokens": [
//!   {"name": "ops", "sha256": "<hex SHA-256 of the token>", "scopes": ["admin", "read", "register:*", "broadcast:*"]},
//!   {"name": "orders", "token": "<the token itself>", "scopes": ["register:urn:shop*", "read"], "max_registrations": 50}
//! ]}
//! ```
//!
//! Scopes: `read` (list and show registrations, policies, cluster, audit), `admin` (policies and
//! membership), `register:<pattern>` (register, unregister, heartbeat and drain within contract
//! namespaces matching the pattern), `broadcast:<pattern>` (broadcast to contract keys matching
//! it), `bind:<pattern>` (bind data-plane paths matching it to a registration's contract, with
//! its `route.path` metadata; a path binding routes requests that name nothing else, so it is
//! granted separately). A pattern is exact, or ends with `*` to cover whole path segments below it: `P*` matches
//! `P` itself and every value that continues `P` with a `/` or a `:` (or any value starting with
//! `P` when `P` already ends with one). So `register:http://contoso.com/payments*` covers
//! `http://contoso.com/payments` and `http://contoso.com/payments/eu`, but not
//! `http://contoso.com/payments-evil`. A pattern that ends with `**` matches any continuation
//! (`payments**` covers `payments-evil`); `*` alone matches everything.
//!
//! Only SHA-256 digests of tokens are kept in memory; a presented token is hashed and looked up,
//! and the digests are compared in constant time. Tokens never appear in logs. Without a
//! bootstrap set the node runs in dev mode: every caller may do everything (runtime tokens
//! included: there is nobody to create them for), and it says so loudly at start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest;
use sha2::Sha256;

use crate::registry::Actor;
use crate::registry::TokenEntry;
use crate::registry::trim_namespace;
use crate::secret::constant_time_eq;

/// Shortest accepted token, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// A scope pattern (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternKind {
    Exact,
    /// `P*`: `P` and the segments below it.
    Segments,
    /// `P**`: anything that starts with `P`.
    Prefix,
}

/// What separates the segments of a namespace: `/` in URLs, `:` in URNs.
const SEGMENT_SEPARATORS: [char; 2] = ['/', ':'];

impl Pattern {
    fn parse(text: &str) -> Self {
        if let Some(prefix) = text.strip_suffix("**") {
            Self { text: prefix.to_owned(), kind: PatternKind::Prefix }
        } else if let Some(prefix) = text.strip_suffix('*') {
            Self { text: prefix.to_owned(), kind: PatternKind::Segments }
        } else {
            Self { text: text.to_owned(), kind: PatternKind::Exact }
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self.kind {
            PatternKind::Exact => value == self.text,
            PatternKind::Prefix => value.starts_with(&self.text),
            PatternKind::Segments => {
                let Some(rest) = value.strip_prefix(self.text.as_str()) else { return false };
                rest.is_empty()
                    || self.text.is_empty()
                    || self.text.ends_with(SEGMENT_SEPARATORS)
                    || rest.starts_with(SEGMENT_SEPARATORS)
            }
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let suffix = match self.kind {
            PatternKind::Exact => "",
            PatternKind::Segments => "*",
            PatternKind::Prefix => "**",
        };
        write!(f, "{}{suffix}", self.text)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read => f.write_str("read"),
            Self::Admin => f.write_str("admin"),
            Self::Register(pattern) => write!(f, "register:{pattern}"),
            Self::Broadcast(pattern) => write!(f, "broadcast:{pattern}"),
            Self::Bind(pattern) => write!(f, "bind:{pattern}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Read,
    Admin,
    Register(Pattern),
    Broadcast(Pattern),
    Bind(Pattern),
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "read" => Ok(Self::Read),
            None if text == "admin" => Ok(Self::Admin),
            Some(("register", pattern)) if !pattern.is_empty() => {
                Ok(Self::Register(Pattern::parse(trim_namespace(pattern))))
            }
            Some(("broadcast", pattern)) if !pattern.is_empty() => Ok(Self::Broadcast(Pattern::parse(pattern))),
            Some(("bind", pattern)) if !pattern.is_empty() => Ok(Self::Bind(Pattern::parse(pattern))),
            _ => Err(format!(
                "unknown scope {text:?} (read, admin, register:<pattern>, broadcast:<pattern>, bind:<pattern>)"
            )),
        }
    }
}

/// A configured token.
#[derive(Debug)]
pub struct Token {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub max_registrations: Option<u32>,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Dev mode: no tokens configured, everything allowed.
    Dev,
    Token(Arc<Token>),
}

impl Caller {
    fn allows(&self, check: impl Fn(&Scope) -> bool) -> bool {
        match self {
            Self::Dev => true,
            Self::Token(token) => token.scopes.iter().any(check),
        }
    }

    pub fn can_read(&self) -> bool {
        self.allows(|s| matches!(s, Scope::Read))
    }

    pub fn can_admin(&self) -> bool {
        self.allows(|s| matches!(s, Scope::Admin))
    }

    /// May register, unregister, renew or drain registrations of this contract namespace.
    pub fn can_register(&self, contract_namespace: &str) -> bool {
        let namespace = trim_namespace(contract_namespace);
        self.allows(|s| matches!(s, Scope::Register(p) if p.matches(namespace)))
    }

    /// May bind this data-plane path to a registration's contract.
    pub fn can_bind(&self, path: &str) -> bool {
        self.allows(|s| matches!(s, Scope::Bind(p) if p.matches(path)))
    }

    pub fn can_broadcast(&self, contract_key: &str) -> bool {
        self.allows(|s| matches!(s, Scope::Broadcast(p) if p.matches(contract_key)))
    }

    /// The identity recorded with the writes of this caller.
    pub fn actor(&self) -> Actor {
        match self {
            Self::Dev => Actor::default(),
            Self::Token(token) => Actor { name: Some(token.name.clone()), quota: token.max_registrations },
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Dev => "dev-mode",
            Self::Token(token) => &token.name,
        }
    }
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "a token is required: Authorization: Bearer <token> on the control API, X-Switchboard-Token: <token> on a broadcast"
    )]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error("the Authorization header must be \"Bearer <token>\"")]
    NotBearer,
    #[error(
        "without tokens (dev mode), a membership change needs the cluster secret: Authorization: Bearer <cluster secret>"
    )]
    SecretRequired,
}

/// Where the replicated token table is read from (the node's applied state).
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// The table as last applied: cheap to clone, and `ptr_eq` to the previous one until changed.
    fn token_table(&self) -> imbl::OrdMap<String, TokenEntry>;
}

impl TokenSource for crate::raft::AppliedView {
    fn token_table(&self) -> imbl::OrdMap<String, TokenEntry> {
        self.load().state.tokens().clone()
    }
}

/// The tokens a node accepts.
#[derive(Debug, Default)]
pub struct Tokens {
    /// The bootstrap set (the tokens file).
    by_digest: HashMap<[u8; 32], Arc<Token>>,
    replicated: std::sync::OnceLock<Arc<dyn TokenSource>>,
    /// The replicated table as last seen, parsed.
    cache: std::sync::RwLock<Arc<Replicated>>,
}

/// The replicated table, parsed for lookups.
#[derive(Debug, Default)]
struct Replicated {
    table: imbl::OrdMap<String, TokenEntry>,
    by_digest: HashMap<[u8; 32], Arc<Token>>,
}

impl Replicated {
    fn of(table: imbl::OrdMap<String, TokenEntry>) -> Self {
        let mut by_digest = HashMap::new();
        for def in table.values().filter_map(TokenEntry::def) {
            // The API checks scopes before they are replicated; one that does not parse (written
            // by a newer build) grants nothing.
            let scopes = def.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
            let token = Token { name: def.name.clone(), scopes, max_registrations: def.max_registrations };
            by_digest.insert(def.sha256, Arc::new(token));
        }
        Self { table, by_digest }
    }

    fn revoked(&self, name: &str) -> bool {
        matches!(self.table.get(name), Some(TokenEntry::Revoked { .. }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    scopes: Vec<String>,
    #[serde(default)]
    max_registrations: Option<u32>,
}

/// SHA-256 of a token.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// 64 hex digits as 32 bytes.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    // `from_str_radix` alone would take a sign: `+a` is not two hex digits.
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"Bearer ").then_some(token)
}

impl Tokens {
    /// Dev mode: nothing configured.
    pub fn is_dev_mode(&self) -> bool {
        self.by_digest.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Reads tokens from a file or from JSON text; both absent means dev mode.
    pub fn load(file: Option<&Path>, inline: Option<&str>) -> Result<Self, String> {
        let text = match (file, inline) {
            (Some(_), Some(_)) => return Err("give tokens in a file or in the environment, not both".into()),
            (Some(path), None) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            (None, Some(text)) => text.to_owned(),
            (None, None) => return Ok(Self::default()),
        };
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokensFile = serde_json::from_str(text).map_err(|e| format!("tokens: {e}"))?;
        if file.tokens.is_empty() {
            return Err("tokens: the list is empty (leave tokens unset for dev mode)".into());
        }
        let mut tokens = Self::default();
        let mut names = std::collections::BTreeSet::new();
        for entry in file.tokens {
            if entry.name.is_empty() || !names.insert(entry.name.clone()) {
                return Err(format!("tokens: names must be unique and non-empty ({:?})", entry.name));
            }
            let digest = match (entry.token, entry.sha256) {
                (Some(token), None) if token.len() >= MIN_TOKEN_LEN => digest(token.as_bytes()),
                (Some(_), None) => return Err(format!("tokens: {} is shorter than {MIN_TOKEN_LEN} bytes", entry.name)),
                (None, Some(hex)) => {
                    parse_hex32(&hex).ok_or_else(|| format!("tokens: {}: sha256 must be 64 hex digits", entry.name))?
                }
                _ => return Err(format!("tokens: {} needs exactly one of token and sha256", entry.name)),
            };
            let scopes = entry
                .scopes
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tokens: {}: {e}", entry.name))?;
            let token = Token { name: entry.name, scopes, max_registrations: entry.max_registrations };
            if tokens.by_digest.insert(digest, Arc::new(token)).is_some() {
                return Err("tokens: two entries share a token".into());
            }
        }
        Ok(tokens)
    }

    /// Authenticates the value of `Authorization: Bearer <token>` (the scheme is
    /// case-insensitive, as RFC 7235 says; a bare token is refused).
    pub fn authenticate(&self, presented: Option<&[u8]>) -> Result<Caller, AuthError> {
        if self.is_dev_mode() {
            return Ok(Caller::Dev);
        }
        let presented = presented.ok_or(AuthError::Missing)?;
        self.authenticate_token(Some(bearer_token(presented).ok_or(AuthError::NotBearer)?))
    }

    /// Authenticates a token given on its own (the `X-Switchboard-Token` header of broadcasts).
    pub fn authenticate_token(&self, token: Option<&[u8]>) -> Result<Caller, AuthError> {
        if self.is_dev_mode() {
            return Ok(Caller::Dev);
        }
        let token = token.ok_or(AuthError::Missing)?;
        let wanted = digest(token);
        let replicated = self.replicated();
        let found = match self.by_digest.get_key_value(&wanted) {
            Some((stored, entry)) if !replicated.revoked(&entry.name) => Some((stored, entry)),
            Some(_) => None,
            None => replicated.by_digest.get_key_value(&wanted),
        };
        match found {
            Some((stored, entry)) if constant_time_eq(stored, &wanted) => Ok(Caller::Token(entry.clone())),
            _ => Err(AuthError::Invalid),
        }
    }

    /// Reads runtime tokens from `source` from now on (set once, when the node has opened its
    /// state).
    pub fn attach(&self, source: Arc<dyn TokenSource>) {
        let _ = self.replicated.set(source);
    }

    /// The replicated table, parsed again only when it changed.
    fn replicated(&self) -> Arc<Replicated> {
        let Some(source) = self.replicated.get() else { return Arc::default() };
        let table = source.token_table();
        let cached = self.cache.read().unwrap_or_else(|p| p.into_inner()).clone();
        if cached.table.ptr_eq(&table) || (cached.table.is_empty() && table.is_empty()) {
            return cached;
        }
        let fresh = Arc::new(Replicated::of(table));
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        fresh
    }

    /// Names of the bootstrap set, with their scopes and quotas (never their digests).
    pub fn bootstrap(&self) -> impl Iterator<Item = &Token> {
        self.by_digest.values().map(|token| &**token)
    }

    /// Whether `name` belongs to the bootstrap set.
    pub fn is_bootstrap_name(&self, name: &str) -> bool {
        self.by_digest.values().any(|token| token.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"tokens": [
        {"name": "ops", "token": "ops-token-0123456789", "scopes": ["admin", "read", "register:*", "broadcast:*"]},
        {"name": "orders", "sha256": "SHA", "scopes": ["register:urn:shop*", "broadcast:urn:shop/ICache"], "max_registrations": 2}
    ]}"#;

    fn tokens() -> Tokens {
        let sha: String = digest(b"orders-token-0123456789").iter().map(|b| format!("{b:02x}")).collect();
        Tokens::parse(&FILE.replace("SHA", &sha)).unwrap()
    }

    #[test]
    fn a_digest_is_64_hex_digits_and_nothing_else() {
        let hex = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(parse_hex32(hex).map(|d| d[0]), Some(0x01));
        for bad in [&hex[..62], "+a".repeat(32).as_str(), &hex.replace('0', "g"), &format!("{hex}00")] {
            assert_eq!(parse_hex32(bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_decide() {
        let tokens = tokens();
        let ops = tokens.authenticate(Some(b"Bearer ops-token-0123456789")).unwrap();
        assert!(ops.can_admin() && ops.can_read() && ops.can_register("urn:anything") && ops.can_broadcast("x/y"));
        let orders = tokens.authenticate(Some(b"Bearer orders-token-0123456789")).unwrap();
        assert!(!orders.can_admin() && !orders.can_read());
        assert!(
            orders.can_register("urn:shop") && orders.can_register("urn:shop:eu/") && !orders.can_register("urn:bank")
        );
        assert!(orders.can_broadcast("urn:shop/ICache") && !orders.can_broadcast("urn:shop/IOther"));
        assert_eq!(orders.actor(), Actor { name: Some("orders".into()), quota: Some(2) });
    }

    #[test]
    fn bad_tokens_are_refused() {
        let tokens = tokens();
        assert_eq!(tokens.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(tokens.authenticate(Some(b"Bearer nope-nope-nope-nope")).unwrap_err(), AuthError::Invalid);
        assert_eq!(tokens.authenticate(Some(b"Bearer ops-token-012345678")).unwrap_err(), AuthError::Invalid);
        assert_eq!(tokens.authenticate(Some(b"")).unwrap_err(), AuthError::NotBearer);
        assert_eq!(tokens.authenticate(Some(b"ops-token-0123456789")).unwrap_err(), AuthError::NotBearer);
        assert_eq!(tokens.authenticate(Some(b"Basic ops-token-0123456789")).unwrap_err(), AuthError::NotBearer);
        assert!(tokens.authenticate(Some(b"bearer ops-token-0123456789")).is_ok());
    }

    /// A token table that a test changes at will.
    #[derive(Debug, Default)]
    struct Table(std::sync::Mutex<imbl::OrdMap<String, TokenEntry>>);

    impl TokenSource for Table {
        fn token_table(&self) -> imbl::OrdMap<String, TokenEntry> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn runtime_tokens_count_as_soon_as_the_table_has_them_and_revocation_wins() {
        let tokens = tokens();
        let table = Arc::new(Table::default());
        tokens.attach(table.clone());
        let runtime = b"Bearer runtime-token-0123456789";
        assert_eq!(tokens.authenticate(Some(runtime)).unwrap_err(), AuthError::Invalid);
        let def = crate::registry::TokenDef {
            name: "svc".into(),
            sha256: digest(b"runtime-token-0123456789"),
            scopes: vec!["register:urn:svc*".into(), "not-a-scope".into()],
            max_registrations: Some(4),
        };
        let active = TokenEntry::Active { def, created_at_ms: 1, created_by: Some("ops".into()) };
        table.0.lock().unwrap().insert("svc".into(), active);
        let caller = tokens.authenticate(Some(runtime)).unwrap();
        assert!(caller.can_register("urn:svc:eu") && !caller.can_read(), "the unreadable scope grants nothing");
        assert_eq!(caller.actor(), Actor { name: Some("svc".into()), quota: Some(4) });
        let revoked = TokenEntry::Revoked { revoked_at_ms: 2, revoked_by: None };
        table.0.lock().unwrap().insert("svc".into(), revoked.clone());
        assert_eq!(tokens.authenticate(Some(runtime)).unwrap_err(), AuthError::Invalid);
        // Revoking a name of the file disables that token too.
        assert!(tokens.authenticate(Some(b"Bearer ops-token-0123456789")).is_ok());
        table.0.lock().unwrap().insert("ops".into(), revoked);
        assert_eq!(tokens.authenticate(Some(b"Bearer ops-token-0123456789")).unwrap_err(), AuthError::Invalid);
        assert!(tokens.authenticate(Some(b"Bearer orders-token-0123456789")).is_ok(), "the others stay");
        assert_eq!(tokens.bootstrap().count(), 2);
        assert!(tokens.is_bootstrap_name("ops") && !tokens.is_bootstrap_name("svc"));
    }

    #[test]
    fn scopes_print_as_they_are_written() {
        for text in ["read", "admin", "register:urn:shop*", "register:urn:a**", "broadcast:urn:a/B", "register:*"] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn dev_mode_allows_everything() {
        let tokens = Tokens::default();
        assert!(tokens.is_dev_mode());
        let caller = tokens.authenticate(None).unwrap();
        assert!(caller.can_admin() && caller.can_register("x") && caller.can_broadcast("x/y"));
        assert_eq!(caller.actor(), Actor::default());
    }

    #[test]
    fn bad_files_are_refused() {
        for (text, needle) in [
            ("{}", "missing field"),
            (r#"{"tokens": []}"#, "empty"),
            (r#"{"tokens": [{"name": "a", "token": "short", "scopes": []}]}"#, "shorter"),
            (r#"{"tokens": [{"name": "a", "sha256": "zz", "scopes": []}]}"#, "64 hex"),
            (r#"{"tokens": [{"name": "a", "token": "0123456789abcdef", "scopes": ["write"]}]}"#, "unknown scope"),
            (
                r#"{"tokens": [{"name": "a", "token": "0123456789abcdef", "scopes": []}, {"name": "a", "token": "0123456789abcdeg", "scopes": []}]}"#,
                "unique",
            ),
            (r#"{"tokens": [{"name": "a", "token": "0123456789abcdef", "scopes": [], "extra": 1}]}"#, "unknown field"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn patterns_cover_whole_segments() {
        assert!(Pattern::parse("*").matches("anything"));
        assert!(Pattern::parse("urn:a").matches("urn:a"));
        assert!(!Pattern::parse("urn:a").matches("urn:abc"));
        let payments = Pattern::parse("http://contoso.com/payments*");
        for covered in
            ["http://contoso.com/payments", "http://contoso.com/payments/eu", "http://contoso.com/payments:v2"]
        {
            assert!(payments.matches(covered), "{covered}");
        }
        for outside in ["http://contoso.com/payments-evil", "http://contoso.com/paymentsx", "http://contoso.com/pay"] {
            assert!(!payments.matches(outside), "{outside}");
        }
        assert!(Pattern::parse("urn:shop:*").matches("urn:shop:orders"));
        assert!(!Pattern::parse("urn:shop*").matches("urn:shopping"));
        assert!(!Pattern::parse("http://contoso.com*").matches("http://contoso.com.evil.example"));
        assert!(Pattern::parse("http://contoso.com/payments**").matches("http://contoso.com/payments-evil"));
    }
}
