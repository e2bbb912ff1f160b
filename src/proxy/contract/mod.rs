//! Which contract a request is for. Pure functions over headers, a bounded body prefix and the
//! applied registry.
//!
//! Resolution order (the first that names a registered contract decides):
//! 1. the action of the `SOAPAction` header (quoted or not) or of the `action` parameter of a
//!    SOAP 1.2 `application/soap+xml` content type, minus its last `/`-segment (WCF style);
//! 2. for a SOAP request, the WS-Addressing `Action` of the envelope header (2004/08 and 2005/08);
//! 3. the `X-Switchboard-Contract` header;
//! 4. the longest path prefix a registration binds (its [`crate::registry::PATH_KEY`] metadata), so that a client
//!    that cannot add a header, or a WSDL's `soap:address`, routes by URL;
//! 5. for a SOAP request, the first element of the envelope's `Body`: its namespace is the
//!    contract namespace. The one contract registered in that namespace decides; among several,
//!    the one whose registrations list the element's local name (or the request's action) in
//!    their [`OPERATIONS_KEY`] metadata. A contract whose registrations list operations serves
//!    only those through this rule.
//!
//! A request that names no registered contract either way is refused with the most specific
//! reason (the action it named, the namespace of its body, or candidates it could mean).
//!
//! The envelope is read only up to the first element of its `Body`, never past
//! [`ENVELOPE_SCAN_CAP`] bytes, and DTDs are refused, so entities are never expanded. The body is
//! forwarded unchanged.

pub mod read;

use http::HeaderName;

use crate::h1::HeaderView;
use crate::h1::text;
use crate::metrics::RouteRule;
use crate::registry::ContractKey;
use crate::registry::RegistryState;
use crate::registry::trim_namespace;
use crate::soap;
use crate::soap::ActionHeader;
use crate::soap::envelope::ENVELOPE_SCAN_CAP;
use crate::soap::envelope::Envelope;
use crate::soap::envelope::Operation;
use crate::soap::soap_version;

/// The header that names a contract for requests that are not SOAP (or override their action).
pub const CONTRACT_HEADER: HeaderName = HeaderName::from_static("x-switchboard-contract");

/// Metadata key in which a registration lists the operations (local names of the `Body`'s first
/// element) or the actions it serves, separated by commas or spaces.
pub const OPERATIONS_KEY: &str = "soap.operations";

/// Which rule decided the contract (shown by `X-Switchboard-Explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SoapAction,
    ContentTypeAction,
    WsAddressing,
    Header,
    /// The namespace of the `Body`'s first element, which one contract is registered in.
    BodyNamespace,
    /// The `Body`'s first element, which one contract of its namespace lists as an operation.
    BodyOperation,
    /// A path prefix that a contract's registrations bind.
    Path,
}

impl Source {
    /// The rule's name, as `X-Switchboard-Contract-Source` and the metrics show it.
    pub fn as_str(self) -> &'static str {
        self.rule().label()
    }

    pub fn rule(self) -> RouteRule {
        match self {
            Self::SoapAction => RouteRule::SoapAction,
            Self::ContentTypeAction => RouteRule::ContentTypeAction,
            Self::WsAddressing => RouteRule::WsAddressing,
            Self::Header => RouteRule::Header,
            Self::BodyNamespace => RouteRule::BodyNamespace,
            Self::BodyOperation => RouteRule::BodyOperation,
            Self::Path => RouteRule::Path,
        }
    }
}

/// Why no contract could be read from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("no contract: send a SOAP action or an X-Switchboard-Contract header")]
    Missing,
    #[error("the action {0:?} has no operation segment to drop, and the body names no registered contract")]
    ActionWithoutOperation(String),
    #[error("no endpoint is registered for contract {0}")]
    NotRegistered(ContractKey),
    #[error("no contract is registered in namespace {0:?} (the namespace of the body's first element)")]
    NoContractInNamespace(String),
    #[error("operation {operation:?} of namespace {namespace:?} could be any of {}: list it in one contract's {OPERATIONS_KEY:?} metadata, or send an action naming the contract", candidates.join(", "))]
    Ambiguous { namespace: String, operation: String, candidates: Vec<String> },
    #[error("path {path} is bound by more than one contract ({}): unregister one binding", candidates.join(", "))]
    PathBoundTwice { path: String, candidates: Vec<String> },
    #[error("the SOAP envelope cannot be read: {0}")]
    InvalidEnvelope(String),
    #[error("the SOAP envelope does not reach the first element of its Body within {ENVELOPE_SCAN_CAP} bytes")]
    EnvelopeTooLarge,
    #[error("the start of the SOAP envelope did not arrive within {0} s")]
    EnvelopeTimeout(u64),
    #[error("the {0} header is not valid text")]
    InvalidHeader(&'static str),
}

/// What a request's headers say about its contract.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    /// The action `SOAPAction` or the SOAP 1.2 `action` parameter names, and which of them.
    pub action: Option<(String, Source)>,
    /// The contract `X-Switchboard-Contract` names.
    pub explicit: Option<ContractKey>,
    /// The request is a SOAP message: its envelope may be read.
    pub soap: bool,
    /// An MTOM/XOP request: the envelope is its root part.
    pub multipart: Option<soap::Multipart>,
}

/// Reads the headers once, from either parser's view of them.
pub fn hints(headers: &(impl HeaderView + ?Sized)) -> Result<Hints, ContractError> {
    let action = soap::header_action(headers).map_err(|_| ContractError::InvalidHeader("SOAPAction"))?;
    let action = action.map(|(action, header)| {
        let source = match header {
            ActionHeader::SoapAction => Source::SoapAction,
            ActionHeader::ContentType => Source::ContentTypeAction,
        };
        (action, source)
    });
    let explicit = match headers.value(&CONTRACT_HEADER) {
        Some(value) => {
            let key = text(value).ok_or(ContractError::InvalidHeader("X-Switchboard-Contract"))?.trim();
            (!key.is_empty()).then(|| ContractKey::from_text(key))
        }
        None => None,
    };
    // The multipart framing is only read for a SOAP request (most requests are not).
    let soap = soap_version(headers).is_some();
    let multipart = if soap { soap::xop_multipart(headers) } else { None };
    Ok(Hints { action, explicit, soap, multipart })
}

/// What to do next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Route(ContractKey, Source),
    /// Only the envelope can tell: read its start, then decide again with it.
    ReadEnvelope,
}

/// Decides the contract of a request from its headers, its envelope once read, and the applied
/// registry (see the module documentation for the order).
pub fn decide(
    hints: &Hints,
    path: &str,
    envelope: Option<&Envelope>,
    state: &RegistryState,
) -> Result<Decision, ContractError> {
    let registered = |action: &str| action_key(action).ok().filter(|key| state.endpoints(key).is_some());
    if let Some((action, source)) = &hints.action
        && let Some(key) = registered(action)
    {
        return Ok(Decision::Route(key, *source));
    }
    let Some(envelope) = envelope else {
        if hints.soap {
            return Ok(Decision::ReadEnvelope);
        }
        if let Some(key) = &hints.explicit {
            return Ok(Decision::Route(key.clone(), Source::Header));
        }
        if let Some(decided) = by_path(path, state) {
            return decided;
        }
        return Err(hints.action.as_ref().map_or(ContractError::Missing, |(action, _)| unregistered(action)));
    };
    if let Some(key) = envelope.action.as_deref().and_then(registered) {
        return Ok(Decision::Route(key, Source::WsAddressing));
    }
    if let Some(key) = &hints.explicit {
        return Ok(Decision::Route(key.clone(), Source::Header));
    }
    if let Some(decided) = by_path(path, state) {
        return decided;
    }
    let actions: Vec<&str> =
        hints.action.iter().map(|(action, _)| action.as_str()).chain(envelope.action.as_deref()).collect();
    if let Some(operation) = &envelope.operation {
        match by_operation(operation, &actions, state) {
            Err(ContractError::NoContractInNamespace(_)) if !actions.is_empty() => {}
            decided => return decided,
        }
    }
    Err(actions.first().map_or(ContractError::Missing, |action| unregistered(action)))
}

/// The contract whose registrations bind the longest prefix of `path`, if any binds one.
fn by_path(path: &str, state: &RegistryState) -> Option<Result<Decision, ContractError>> {
    let (bound, keys) = state.binding(path)?;
    let mut keys = keys.into_iter();
    Some(match (keys.next(), keys.len()) {
        (Some(key), 0) => Ok(Decision::Route(key, Source::Path)),
        (first, _) => Err(ContractError::PathBoundTwice {
            path: bound.to_owned(),
            candidates: first.into_iter().chain(keys).map(|key| key.to_string()).collect(),
        }),
    })
}

/// The refusal for an action that names no registered contract.
fn unregistered(action: &str) -> ContractError {
    match action_key(action) {
        Ok(key) => ContractError::NotRegistered(key),
        Err(err) => err,
    }
}

/// The contract of the body's first element: the one registered in its namespace that serves it.
fn by_operation(operation: &Operation, actions: &[&str], state: &RegistryState) -> Result<Decision, ContractError> {
    let namespace = trim_namespace(&operation.namespace);
    let lists = |key: &ContractKey| -> Option<bool> {
        let endpoints = state.endpoints(key)?;
        let mut listed = endpoints.iter().filter_map(|r| r.metadata.get(OPERATIONS_KEY)).peekable();
        if listed.peek().is_none() {
            return Some(false);
        }
        let serves = listed.flat_map(|list| list.split([',', ' '])).any(|item| {
            let item = item.trim();
            !item.is_empty() && (item == operation.name || actions.contains(&item))
        });
        serves.then_some(true)
    };
    // Each contract of the namespace that serves the operation, and whether it lists it.
    let serving: Vec<(&ContractKey, bool)> =
        state.contracts_in(namespace).filter_map(|key| lists(key).map(|listed| (key, listed))).collect();
    let listing: Vec<&ContractKey> = serving.iter().filter(|(_, listed)| *listed).map(|(key, _)| *key).collect();
    match (serving.as_slice(), listing.as_slice()) {
        ([], _) => Err(ContractError::NoContractInNamespace(namespace.to_owned())),
        (_, [key]) => Ok(Decision::Route((*key).clone(), Source::BodyOperation)),
        ([(key, _)], []) => Ok(Decision::Route((*key).clone(), Source::BodyNamespace)),
        (all, _) => Err(ContractError::Ambiguous {
            namespace: namespace.to_owned(),
            operation: operation.name.clone(),
            candidates: all.iter().map(|(key, _)| key.to_string()).collect(),
        }),
    }
}

/// `{namespace}/{contract}/{operation}` → `{namespace}/{contract}`.
pub fn action_key(action: &str) -> Result<ContractKey, ContractError> {
    soap::action_contract(action)
        .map(ContractKey::from_text)
        .ok_or_else(|| ContractError::ActionWithoutOperation(action.to_owned()))
}

#[cfg(test)]
mod tests;
