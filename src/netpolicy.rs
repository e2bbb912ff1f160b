//! Which endpoint addresses the router may send traffic to.
//!
//! A registered address is a place the router will connect to on behalf of any client, so it is
//! checked twice against the same policy: when it is registered (its scheme, and every IP its
//! host is or resolves to) and when a connection is made (the connector resolves the name itself
//! and connects only to an IP the policy allows, with the real port, so a name cannot be pointed
//! at a forbidden address later). By default link-local and cloud metadata addresses, multicast,
//! "this network", and every listener of every router of the cluster (this node's, and the
//! others' as their gossip announces them) are refused; operators can narrow the allowed
//! networks further.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;

/// Networks refused whatever the configuration says.
pub const ALWAYS_DENIED: [&str; 8] = [
    "0.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "fe80::/10",
    "ff00::/8",
    "fd00:ec2::254/128",
    "::/128",
];

/// How long a registration waits for its host name to resolve before it is accepted anyway (the
/// connector checks again at connect time).
const REGISTRATION_LOOKUP: Duration = Duration::from_millis(250);
/// Name lookups for registrations at once. A lookup holds a blocking thread until the system
/// resolver gives up, however long that takes; beyond this many, registrations skip the lookup
/// (the connector still checks every connection).
static REGISTRATION_LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// A host checked once by [`AddressPolicy::prepare_host`], for checks of the same host again.
#[derive(Debug, Clone)]
pub struct PreparedHost {
    /// The host's IP and port, when the host is an IP literal.
    literal: Option<(IpAddr, u16)>,
    /// What the network lists say of it.
    networks: Result<(), Refused>,
}

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The address policy of one node.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
    denied: Vec<IpNet>,
    schemes: Vec<String>,
    /// This node's listeners: an endpoint must never be the router itself.
    own: Vec<SocketAddr>,
    /// The other routers' listeners, as their gossip announces them.
    others: Arc<ArcSwap<Vec<SocketAddr>>>,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            denied: always_denied().collect(),
            schemes: vec!["http".into(), "https".into()],
            own: with_interfaces(Vec::new()),
            others: Arc::default(),
        }
    }
}

/// [`ALWAYS_DENIED`], parsed (each parses: `the_built_in_networks_parse`).
fn always_denied() -> impl Iterator<Item = IpNet> {
    ALWAYS_DENIED.iter().filter_map(|n| n.parse::<IpNet>().ok())
}

/// `listeners`, plus, for one bound to every interface, that port on each address of this host's
/// interfaces: the addresses other routers must refuse too.
fn with_interfaces(listeners: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let interfaces: Vec<IpAddr> =
        if_addrs::get_if_addrs().map(|all| all.iter().map(|i| i.ip()).collect()).unwrap_or_default();
    let mut expanded = listeners.clone();
    for listener in listeners.iter().filter(|l| l.ip().is_unspecified()) {
        expanded.extend(interfaces.iter().map(|ip| SocketAddr::new(*ip, listener.port())));
    }
    expanded.sort();
    expanded.dedup();
    expanded
}

/// Whether `listener` (a bound address, perhaps `0.0.0.0`) is reached by `ip:port`.
fn reaches(listener: &SocketAddr, ip: IpAddr, port: u16) -> bool {
    listener.port() == port
        && (listener.ip() == ip
            || ((listener.ip().is_unspecified() || listener.ip().is_loopback()) && ip.is_loopback()))
}

impl AddressPolicy {
    /// `allowed` empty means every network not denied.
    pub fn new(
        allowed: &[String],
        denied: &[String],
        schemes: &[String],
        own: Vec<SocketAddr>,
    ) -> Result<Self, String> {
        let parse = |text: &String| text.parse::<IpNet>().map_err(|_| format!("{text:?} is not a network (CIDR)"));
        let allowed = allowed.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        let mut denied_nets = denied.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        denied_nets.extend(always_denied());
        for scheme in schemes {
            if !matches!(scheme.as_str(), "http" | "https") {
                return Err(format!("scheme {scheme:?} is not supported (http, https)"));
            }
        }
        Ok(Self {
            allowed,
            denied: denied_nets,
            schemes: schemes.to_vec(),
            own: with_interfaces(own),
            others: Arc::default(),
        })
    }

    /// This node's listeners, a listener bound to every interface once per interface address.
    pub fn own(&self) -> &[SocketAddr] {
        &self.own
    }

    /// Replaces what is known of the other routers' listeners.
    pub fn set_other_routers(&self, listeners: Vec<SocketAddr>) {
        self.others.store(Arc::new(listeners));
    }

    /// Checks one IP and port a connection would go to.
    pub fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), Refused> {
        self.check_networks(ip)?;
        self.check_listener(ip, port)
    }

    /// The network lists' part of [`Self::check_ip`]: fixed for the life of the policy.
    fn check_networks(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.denied.iter().any(|net| net.contains(&ip)) {
            return Err(Refused(format!("{ip} is in a denied network")));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|net| net.contains(&ip)) {
            return Err(Refused(format!("{ip} is outside the allowed networks")));
        }
        Ok(())
    }

    /// A host as it appears in a URI, with its port, made ready for [`Self::recheck`]: its IP
    /// when it is a literal, and what the network lists say of it (which never changes).
    pub fn prepare_host(&self, host: &str, port: u16) -> PreparedHost {
        match ip_literal(host) {
            Some(ip) => PreparedHost { literal: Some((ip, port)), networks: self.check_networks(ip) },
            None => PreparedHost { literal: None, networks: Ok(()) },
        }
    }

    /// [`Self::check_host`] of a prepared host: only the cluster's listeners, which change, are
    /// looked at again.
    pub fn recheck(&self, host: &PreparedHost) -> Result<(), Refused> {
        host.networks.clone()?;
        match host.literal {
            Some((ip, port)) => self.check_listener(ip, port),
            None => Ok(()),
        }
    }

    /// Only the cluster's listeners (this router's and the others'): what every node refuses
    /// alike, whatever its own network lists say.
    pub fn check_listener(&self, ip: IpAddr, port: u16) -> Result<(), Refused> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.own.iter().any(|listener| reaches(listener, ip, port)) {
            return Err(Refused(format!("{ip}:{port} is one of this router's own listeners")));
        }
        if self.others.load().iter().any(|listener| reaches(listener, ip, port)) {
            return Err(Refused(format!("{ip}:{port} is a listener of another router of this cluster")));
        }
        Ok(())
    }

    /// Checks a host as it appears in a URI: an IP literal (bracketed for IPv6) is checked, a
    /// name is left to the connector.
    pub fn check_host(&self, host: &str, port: u16) -> Result<(), Refused> {
        self.recheck(&self.prepare_host(host, port))
    }

    /// Checks a registered address: its scheme, and its IP when the host is an IP literal.
    pub fn check_url(&self, address: &str) -> Result<(), Refused> {
        let url = parse_url(address)?;
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(Refused(format!("scheme {} is not allowed here", url.scheme())));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), port),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), port),
            // Names are checked when they are resolved, at registration and at connect time.
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refused("no host".into())),
        }
    }

    /// [`AddressPolicy::check_url`], and for a host name every IP it resolves to now. A name that
    /// does not resolve (yet) is accepted: the connector checks it again every time.
    pub async fn check_registration(&self, address: &str) -> Result<(), Refused> {
        self.check_url(address)?;
        self.check_resolved(address, Self::check_ip).await
    }

    /// Whether `address` reaches one of the cluster's listeners, its host name resolved (the
    /// leader's second check of a forwarded registration: it always knows its own listeners).
    pub async fn check_not_a_listener(&self, address: &str) -> Result<(), Refused> {
        let url = parse_url(address)?;
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_listener(IpAddr::V4(ip), port),
            Some(url::Host::Ipv6(ip)) => self.check_listener(IpAddr::V6(ip), port),
            _ => self.check_resolved(address, Self::check_listener).await,
        }
    }

    /// Resolves the host name of `address` (bounded in time and in concurrent lookups) and
    /// applies `check` to every address it resolves to.
    async fn check_resolved(
        &self,
        address: &str,
        check: fn(&Self, IpAddr, u16) -> Result<(), Refused>,
    ) -> Result<(), Refused> {
        let url = parse_url(address)?;
        let (Some(url::Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Ok(());
        };
        let Ok(permit) = REGISTRATION_LOOKUPS.try_acquire() else { return Ok(()) };
        let name = host.to_owned();
        let lookup = tokio::spawn(async move {
            let _permit = permit;
            tokio::net::lookup_host((name.as_str(), port)).await.map(Vec::from_iter)
        });
        if let Ok(Ok(Ok(resolved))) = tokio::time::timeout(REGISTRATION_LOOKUP, lookup).await {
            for addr in resolved {
                check(self, addr.ip(), addr.port())
                    .map_err(|refused| Refused(format!("{host} resolves to {}", refused.0)))?;
            }
        }
        Ok(())
    }

    /// Resolves `host:port` and keeps the addresses the policy allows; an error names why none is.
    /// With `lookups`, at most as many name lookups run at once as it has permits: a lookup holds
    /// a blocking thread for as long as the system resolver takes, even after its caller gave up,
    /// so the permit is released only when the lookup returns.
    pub async fn resolve_within(
        &self,
        host: &str,
        port: u16,
        lookups: Option<&'static tokio::sync::Semaphore>,
    ) -> std::io::Result<Vec<SocketAddr>> {
        let resolved: Vec<SocketAddr> = match (ip_literal(host), lookups) {
            (Some(ip), _) => vec![SocketAddr::new(ip, port)],
            (None, None) => tokio::net::lookup_host((host, port)).await?.collect(),
            (None, Some(lookups)) => {
                let permit = lookups.acquire().await.map_err(std::io::Error::other)?;
                let name = host.to_owned();
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port)).map(Iterator::collect)
                })
                .await
                .map_err(std::io::Error::other)??
            }
        };
        let mut refusals = Vec::new();
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| match self.check_ip(addr.ip(), addr.port()) {
                Ok(()) => true,
                Err(refused) => {
                    refusals.push(refused.0);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            let reason = if refusals.is_empty() { "no address".to_owned() } else { refusals.join("; ") };
            tracing::warn!(host, reason, "endpoint host resolves only to refused addresses");
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{host} resolves only to refused addresses: {reason}"),
            ));
        }
        Ok(allowed)
    }
}

/// The IP of a host as it appears in a URI (bracketed for IPv6), when it is an IP literal.
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

fn parse_url(address: &str) -> Result<url::Url, Refused> {
    url::Url::parse(address).map_err(|e| Refused(format!("not a URL: {e}")))
}

/// The data plane's connector: it resolves the endpoint's host through the address policy, with
/// the real port, and connects to the first address the policy allows (the TLS layer above keeps
/// the host name for SNI and certificate checks).
#[derive(Debug, Clone)]
pub struct PolicyConnector {
    pub policy: Arc<AddressPolicy>,
    pub inner: hyper_util::client::legacy::connect::HttpConnector,
    /// Bounds the name lookups of the connections it makes (see `AddressPolicy::resolve_within`).
    pub lookups: Option<&'static tokio::sync::Semaphore>,
}

impl tower::Service<http::Uri> for PolicyConnector {
    type Response = <hyper_util::client::legacy::connect::HttpConnector as tower::Service<http::Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (policy, mut inner, lookups) = (self.policy.clone(), self.inner.clone(), self.lookups);
        Box::pin(async move {
            let host = uri.host().ok_or("the endpoint address has no host")?.to_owned();
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let allowed = policy.resolve_within(&host, port, lookups).await?;
            let ip = allowed[0];
            let direct = http::Uri::builder()
                .scheme(uri.scheme_str().unwrap_or("http"))
                .authority(ip.to_string())
                .path_and_query("/")
                .build()?;
            tower::Service::call(&mut inner, direct).await.map_err(Into::into)
        })
    }
}

/// Whether `addr` is `host:port`: a host that is not empty, and a port number.
pub fn is_host_port(addr: &str) -> bool {
    // Digits only (`u16`'s parser takes a `+`), and not port 0, which nothing listens on.
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_networks_parse() {
        assert_eq!(always_denied().count(), ALWAYS_DENIED.len());
    }

    #[test]
    fn defaults_refuse_metadata_link_local_and_self() {
        let own = vec!["0.0.0.0:8080".parse().unwrap(), "10.0.0.1:8081".parse().unwrap()];
        let policy = AddressPolicy::new(&[], &[], &["http".into(), "https".into()], own).unwrap();
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0:9000/",
            "http://127.0.0.1:8080/",
            "http://10.0.0.1:8081/",
            "http://224.0.0.1/",
        ] {
            assert!(policy.check_url(refused).is_err(), "{refused} was allowed");
        }
        for allowed in
            ["http://10.0.0.5:9000/", "https://svc.internal/", "http://127.0.0.1:9000/", "http://[2001:db8::1]:80/"]
        {
            assert_eq!(policy.check_url(allowed), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn a_prepared_host_keeps_its_network_verdict_and_sees_listeners_as_they_change() {
        let policy = AddressPolicy::new(&[], &["10.9.0.0/16".into()], &["http".into()], vec![]).unwrap();
        let denied = policy.prepare_host("10.9.0.1", 80);
        let other = policy.prepare_host("10.0.0.7", 8080);
        let named = policy.prepare_host("svc.internal", 8080);
        assert!(policy.recheck(&denied).unwrap_err().0.contains("denied network"));
        assert_eq!(policy.recheck(&other), Ok(()));
        policy.set_other_routers(vec!["10.0.0.7:8080".parse().unwrap()]);
        assert!(policy.recheck(&other).unwrap_err().0.contains("another router"));
        assert_eq!(policy.recheck(&named), Ok(()), "names are checked when resolved");
        policy.set_other_routers(vec![]);
        assert_eq!(policy.recheck(&other), Ok(()));
        for (host, port) in [("10.9.0.1", 80), ("10.0.0.7", 8080), ("[::ffff:10.9.0.3]", 80)] {
            assert_eq!(policy.recheck(&policy.prepare_host(host, port)), policy.check_host(host, port), "{host}");
        }
    }

    #[test]
    fn ip_literals_bracketed_or_not() {
        assert_eq!(ip_literal("10.0.0.5"), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(ip_literal("[2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip_literal("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip_literal("svc.internal"), None);
        assert_eq!(ip_literal("[svc.internal]"), None);
    }

    #[test]
    fn allowed_networks_and_schemes_narrow_it_down() {
        let policy =
            AddressPolicy::new(&["10.0.0.0/8".into()], &["10.9.0.0/16".into()], &["https".into()], vec![]).unwrap();
        assert!(policy.check_url("https://10.1.2.3/").is_ok());
        assert!(policy.check_url("https://10.9.2.3/").unwrap_err().0.contains("denied"));
        assert!(policy.check_url("https://192.168.1.1/").unwrap_err().0.contains("outside"));
        assert!(policy.check_url("http://10.1.2.3/").unwrap_err().0.contains("scheme"));
        assert!(AddressPolicy::new(&["nonsense".into()], &[], &[], vec![]).is_err());
        assert!(AddressPolicy::new(&[], &[], &["ftp".into()], vec![]).is_err());
    }
}
