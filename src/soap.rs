//! SOAP envelopes and faults, shared by the data plane, the SOAP registration endpoint and the
//! sample service.

pub const SOAP11_ENVELOPE: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_ENVELOPE: &str = "http://www.w3.org/2003/05/soap-envelope";

/// SOAP version of a message; decides envelope namespace, content type and fault shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::V11 => "text/xml; charset=utf-8",
            Self::V12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// Wraps body content (already XML) in an envelope; returns content type and text.
pub fn envelope(version: SoapVersion, body: &str) -> (&'static str, String) {
    let text = match version {
        SoapVersion::V11 => format!(r#"<s:Envelope xmlns:s="{SOAP11_ENVELOPE}"><s:Body>{body}</s:Body></s:Envelope>"#),
        SoapVersion::V12 => {
            format!(r#"<env:Envelope xmlns:env="{SOAP12_ENVELOPE}"><env:Body>{body}</env:Body></env:Envelope>"#)
        }
    };
    (version.content_type(), text)
}

/// A fault with a stable `code` in its detail. `client_fault` says whether the sender is to
/// blame (`Client`/`Sender`) or the receiving side (`Server`/`Receiver`).
pub fn fault(version: SoapVersion, client_fault: bool, code: &str, message: &str) -> (&'static str, String) {
    let message = quick_xml::escape::escape(message);
    let detail = format!(r#"<sb:Error xmlns:sb="urn:switchboard:error"><sb:Code>{code}</sb:Code></sb:Error>"#);
    let text = match version {
        SoapVersion::V11 => {
            let fault_code = if client_fault { "s:Client" } else { "s:Server" };
            format!(
                r#"<s:Envelope xmlns:s="{SOAP11_ENVELOPE}"><s:Body><s:Fault><faultcode>{fault_code}</faultcode><faultstring xml:lang="en">{message}</faultstring><detail>{detail}</detail></s:Fault></s:Body></s:Envelope>"#
            )
        }
        SoapVersion::V12 => {
            let value = if client_fault { "env:Sender" } else { "env:Receiver" };
            format!(
                r#"<env:Envelope xmlns:env="{SOAP12_ENVELOPE}"><env:Body><env:Fault><env:Code><env:Value>{value}</env:Value></env:Code><env:Reason><env:Text xml:lang="en">{message}</env:Text></env:Reason><env:Detail>{detail}</env:Detail></env:Fault></env:Body></env:Envelope>"#
            )
        }
    };
    (version.content_type(), text)
}
