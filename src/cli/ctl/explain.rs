//! `switchboard explain`: which contract, rule and endpoint a request would get, asked of the
//! data plane as a dry run (`X-Switchboard-Explain: dry-run`): the data plane decides and
//! answers itself, and nothing reaches an endpoint.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::Connection;
use super::CtlError;
use super::output;
use super::output::Output;

/// SOAP 1.2's envelope namespace: a file that uses it is sent as `application/soap+xml`.
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The body of `--soap-action` alone: an empty SOAP 1.1 envelope.
const EMPTY_ENVELOPE: &str =
    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>"#;

/// How the data plane would route a request, without sending it to an endpoint. The token, if
/// any, goes as `X-Switchboard-Token`: endpoint addresses are shown only to a caller with the
/// `read` scope (or to anyone in dev mode).
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("request").required(true).multiple(true).args(["contract", "soap_action", "file"]))]
pub struct ExplainArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The data plane's URL (or `HOST:PORT`).
    #[arg(long, env = "SWITCHBOARD_DATA_ADDR", default_value = "http://127.0.0.1:7010")]
    pub data_addr: String,
    /// A request naming this contract (`X-Switchboard-Contract: NAMESPACE/NAME`).
    #[arg(long)]
    pub contract: Option<String>,
    /// A SOAP message with this action.
    #[arg(long)]
    pub soap_action: Option<String>,
    /// A SOAP message with this file as its body (SOAP 1.1, or 1.2 by its envelope's namespace).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The request's path on the data plane.
    #[arg(long, default_value = "/")]
    pub path: String,
}

pub async fn run(args: ExplainArgs) -> Result<(), CtlError> {
    let base =
        if args.data_addr.contains("://") { args.data_addr.clone() } else { format!("http://{}", args.data_addr) };
    let path = if args.path.starts_with('/') { args.path.clone() } else { format!("/{}", args.path) };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut builder = reqwest::Client::builder().no_proxy().timeout(args.connection.timeout);
    for root in super::roots(args.connection.ca.as_deref())? {
        builder = builder.add_root_certificate(root);
    }
    let http = builder.build().map_err(|err| CtlError::Usage(err.to_string()))?;

    let body = match &args.file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|err| CtlError::Usage(format!("--file {}: {err}", path.display())))?,
        ),
        None => args.soap_action.as_ref().map(|_| EMPTY_ENVELOPE.to_owned()),
    };
    let mut request = match body {
        Some(body) => {
            let action = args.soap_action.as_deref().unwrap_or("");
            let request = http.post(&url);
            let request = if body.contains(SOAP12) {
                request.header("content-type", format!("application/soap+xml; charset=utf-8; action=\"{action}\""))
            } else {
                request.header("content-type", "text/xml; charset=utf-8").header("soapaction", format!("\"{action}\""))
            };
            request.body(body)
        }
        None => http.get(&url),
    };
    request = request.header("x-switchboard-explain", "dry-run");
    if let Some(contract) = &args.contract {
        request = request.header("x-switchboard-contract", contract);
    }
    if let Some(token) = &args.connection.token {
        request = request.header("x-switchboard-token", token);
    }
    let response = request.send().await.map_err(|err| CtlError::Unreachable(format!("{url}: {}", root_cause(&err))))?;
    let status = response.status();
    let code = response.headers().get("x-switchboard-error").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.map_err(|err| CtlError::Unexpected(err.to_string()))?;
    if !status.is_success() {
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let message = json
            .as_ref()
            .and_then(|error| error["message"].as_str().map(str::to_owned))
            .or_else(|| fault_text(&text))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let code = code
            .or_else(|| json.as_ref().and_then(|error| error["code"].as_str().map(str::to_owned)))
            .unwrap_or_else(|| "unknown".to_owned());
        return Err(CtlError::Refused { status: status.as_u16(), code, message });
    }
    let decision: Value = serde_json::from_str(&text)?;
    if decision["dry_run"] != true {
        return Err(CtlError::Unexpected(format!("{url} did not answer a dry run (a router without it?)")));
    }
    if args.connection.output == Output::Json {
        return output::json(&decision);
    }
    let text_of = |field: &str| match &decision[field] {
        Value::Null => "-".to_owned(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    let hidden = "(hidden: needs a token with the read scope)".to_owned();
    let disclosed = |field: &str| if decision.get("candidates").is_some() { text_of(field) } else { hidden.clone() };
    let mut policy = text_of("policy");
    if decision["idempotent"] == true {
        policy.push_str(", idempotent");
    }
    output::record(&[
        ("contract", text_of("contract")),
        ("decided by", text_of("source")),
        ("policy", policy),
        ("endpoint", disclosed("endpoint")),
        ("target", disclosed("target")),
        ("candidates", disclosed("candidates")),
        ("endpoints", text_of("endpoints")),
        ("critical", text_of("critical")),
        ("panic", text_of("panic")),
        ("ws-addressing to", text_of("to")),
        ("view age ms", text_of("view_age_ms")),
    ])
}

/// The text of a SOAP fault (`faultstring` in 1.1, `Reason/Text` in 1.2), roughly.
fn fault_text(xml: &str) -> Option<String> {
    ["faultstring", "Text"].iter().find_map(|element| {
        let opening = [format!("{element}>"), format!("{element} ")];
        let start = opening.iter().filter_map(|tag| xml.find(tag.as_str())).min()?;
        let after = &xml[start..];
        let text = &after[after.find('>')? + 1..];
        Some(text[..text.find('<')?].to_owned())
    })
}

/// The innermost cause (reqwest's own message says only "error sending request").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_a_soap_11_or_12_fault_is_found() {
        let soap11 =
            "<s:Fault><faultcode>s:Client</faultcode><faultstring xml:lang=\"en\">no contract</faultstring></s:Fault>";
        assert_eq!(fault_text(soap11).as_deref(), Some("no contract"));
        let soap12 = "<s:Reason><s:Text xml:lang=\"en\">no endpoint</s:Text></s:Reason>";
        assert_eq!(fault_text(soap12).as_deref(), Some("no endpoint"));
        assert_eq!(fault_text("plain"), None);
    }
}
