//! OpenAPI services as MCP targets: the gateway itself is the MCP server. Each operation of an
//! OpenAPI 3 document becomes a tool (named by `operationId`, else `<method>_<path>`) whose
//! input schema holds the path, query and header parameters and, as `body`, the JSON request
//! body; a call becomes that HTTP request to the service, and its response the tool result.

use super::UpstreamError;
use crate::HttpClient;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// `$ref`s are followed this deep, so a recursive schema cannot loop.
const MAX_REF_DEPTH: usize = 16;
/// Largest service response turned into a tool result.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
enum In {
    Path,
    Query,
    Header,
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    location: In,
    /// Query parameters: arrays and objects spread over several keys (the default).
    explode: bool,
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    method: Method,
    path: String,
    params: Vec<Param>,
    has_body: bool,
    tool: Value,
}

pub struct OpenApiTarget {
    /// Where the document comes from: a file already read, or a URL fetched on first use.
    source: Source,
    operations: OnceCell<Arc<Vec<Operation>>>,
    base: Uri,
    client: Arc<dyn HttpClient>,
}

enum Source {
    Loaded(Arc<Vec<Operation>>),
    Url(Uri),
}

impl OpenApiTarget {
    /// `schema` is a file path (read and checked now) or an http(s) URL (fetched when first
    /// needed); `base` is the service's URL.
    pub fn new(
        schema: &str,
        base: Uri,
        client: Arc<dyn HttpClient>,
    ) -> Result<OpenApiTarget, String> {
        let source = if schema.starts_with("http://") || schema.starts_with("https://") {
            Source::Url(
                schema
                    .parse()
                    .map_err(|e| format!("schema URL {schema:?}: {e}"))?,
            )
        } else {
            let text = std::fs::read_to_string(schema)
                .map_err(|e| format!("reading OpenAPI schema {schema}: {e}"))?;
            Source::Loaded(Arc::new(operations(
                &parse_document(&text).map_err(|e| format!("{schema}: {e}"))?,
            )?))
        };
        Ok(OpenApiTarget {
            source,
            operations: OnceCell::new(),
            base,
            client,
        })
    }

    async fn ops(&self) -> Result<Arc<Vec<Operation>>, UpstreamError> {
        let url = match &self.source {
            Source::Loaded(ops) => return Ok(ops.clone()),
            Source::Url(u) => u,
        };
        self.operations
            .get_or_try_init(|| async {
                let mut req = Request::new(crate::empty());
                *req.uri_mut() = url.clone();
                let resp = self.client.send(req).await.map_err(UpstreamError::Failed)?;
                if !resp.status().is_success() {
                    return Err(UpstreamError::Failed(format!(
                        "fetching the OpenAPI schema: {}",
                        resp.status()
                    )));
                }
                let bytes = crate::read_body(resp.into_body(), 16 << 20)
                    .await
                    .map_err(|_| {
                        UpstreamError::Failed("reading the OpenAPI schema failed".into())
                    })?;
                let doc = parse_document(&String::from_utf8_lossy(&bytes))
                    .map_err(UpstreamError::Failed)?;
                Ok(Arc::new(operations(&doc).map_err(UpstreamError::Failed)?))
            })
            .await
            .cloned()
    }

    /// Answers one JSON-RPC request as the MCP server of this service.
    pub async fn answer(
        &self,
        msg: &Value,
        headers: &http::HeaderMap,
    ) -> Result<Value, UpstreamError> {
        let id = crate::jsonrpc::id(msg);
        let params = crate::jsonrpc::params(msg);
        let result = match crate::jsonrpc::method(msg) {
            "initialize" => {
                let version = params
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .unwrap_or(crate::SUPPORTED_VERSIONS[0]);
                self.ops().await?;
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "switchyard-openapi", "version": env!("CARGO_PKG_VERSION")}
                })
            }
            "ping" => json!({}),
            "tools/list" => {
                let ops = self.ops().await?;
                json!({"tools": ops.iter().map(|o| o.tool.clone()).collect::<Vec<_>>()})
            }
            "tools/call" => {
                let ops = self.ops().await?;
                let name = params
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(op) = ops.iter().find(|o| o.name == name) else {
                    return Ok(crate::jsonrpc::error(
                        id,
                        crate::jsonrpc::Code::INVALID_PARAMS,
                        format!("unknown tool: {name}"),
                    ));
                };
                let empty = Map::new();
                let args = params
                    .and_then(|p| p.get("arguments"))
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                match self.call(op, args, headers).await {
                    Ok(r) => r,
                    Err(e) => {
                        return Ok(crate::jsonrpc::error(
                            id,
                            crate::jsonrpc::Code::INVALID_PARAMS,
                            e,
                        ))
                    }
                }
            }
            m if m.starts_with("notifications/") => return Ok(Value::Null),
            m => {
                return Ok(crate::jsonrpc::error(
                    id,
                    crate::jsonrpc::Code::METHOD_NOT_FOUND,
                    format!("an OpenAPI target has no method {m}"),
                ));
            }
        };
        Ok(crate::jsonrpc::result(id, result))
    }

    async fn call(
        &self,
        op: &Operation,
        args: &Map<String, Value>,
        fwd: &http::HeaderMap,
    ) -> Result<Value, String> {
        let mut path = op.path.clone();
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for p in &op.params {
            // An absent argument and a JSON null (what an optional parameter of a 3.1
            // document, `anyOf: [..., {type: null}]`, is left as) both mean "not sent".
            let Some(v) = args.get(&p.name).filter(|v| !v.is_null()) else {
                if p.location == In::Path {
                    return Err(format!("missing path parameter {}", p.name));
                }
                continue;
            };
            match p.location {
                In::Path => path = path.replace(&format!("{{{}}}", p.name), &encode(&simple(v))),
                // Form style: an array is the key repeated (`tag=a&tag=b`) unless
                // `explode: false` (`tag=a,b`); an exploded object is its own keys.
                In::Query => match v {
                    Value::Array(a) if p.explode => query.extend(
                        a.iter()
                            .filter(|x| !x.is_null())
                            .map(|x| format!("{}={}", encode(&p.name), encode(&scalar(x)))),
                    ),
                    Value::Object(m) if p.explode => query.extend(
                        m.iter()
                            .filter(|(_, x)| !x.is_null())
                            .map(|(k, x)| format!("{}={}", encode(k), encode(&scalar(x)))),
                    ),
                    _ => query.push(format!("{}={}", encode(&p.name), encode(&simple(v)))),
                },
                In::Header => headers.push((p.name.clone(), simple(v))),
            }
        }
        let base_path = self.base.path().trim_end_matches('/');
        let mut pq = format!("{base_path}{path}");
        if !query.is_empty() {
            pq.push('?');
            pq.push_str(&query.join("&"));
        }
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            pq.parse()
                .map_err(|_| format!("invalid request path {pq}"))?,
        );
        let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
        let body = match (op.has_body, args.get("body")) {
            (true, Some(b)) => Some(Bytes::from(serde_json::to_vec(b).unwrap_or_default())),
            _ => None,
        };
        let mut req = Request::new(match &body {
            Some(b) => crate::full(b.clone()),
            None => crate::empty(),
        });
        *req.method_mut() = op.method.clone();
        *req.uri_mut() = uri;
        for (k, v) in fwd {
            req.headers_mut().append(k.clone(), v.clone());
        }
        if body.is_some() {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        req.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, */*"),
        );
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(&v)) {
                req.headers_mut().insert(k, v);
            }
        }
        let resp = self.client.send(req).await?;
        let status = resp.status();
        let bytes = crate::read_body(resp.into_body(), MAX_RESPONSE_BYTES)
            .await
            .map_err(|_| "reading the service's response failed".to_string())?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut result = json!({
            "content": [{"type": "text", "text": text}],
            "isError": !status.is_success(),
        });
        if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) {
            result["structuredContent"] = v;
        }
        Ok(result)
    }
}

/// A scalar as it goes in a URL or header: strings bare, everything else as JSON text.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `simple` style (paths, headers, unexploded query values): an array's items joined by
/// commas, an object's keys and values likewise.
fn simple(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, x)| [k.clone(), scalar(x)])
            .collect::<Vec<_>>()
            .join(","),
        other => scalar(other),
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_document(text: &str) -> Result<Value, String> {
    let doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not an OpenAPI document: {e}"))?;
    match doc.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with('3') => Ok(doc),
        Some(v) => Err(format!("OpenAPI {v} is not supported (3.x is)")),
        None => Err("not an OpenAPI 3 document (no `openapi` field)".into()),
    }
}

/// Follows local `$ref`s (`#/components/...`) so tools carry self-contained schemas.
fn resolve(doc: &Value, v: &Value, depth: usize) -> Value {
    if depth > MAX_REF_DEPTH {
        return json!({});
    }
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let target = r
                    .strip_prefix('#')
                    .and_then(|p| doc.pointer(p))
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                return resolve(doc, &target, depth + 1);
            }
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), resolve(doc, v, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(doc, v, depth + 1)).collect()),
        other => other.clone(),
    }
}

fn tool_name(method: &str, path: &str, op: &Value) -> String {
    let raw = match op.get("operationId").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => format!("{method}{}", path.replace(['/', '{', '}'], "_")),
    };
    // MCP tool names: letters, digits, `_`, `-`, `.`.
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

fn operations(doc: &Value) -> Result<Vec<Operation>, String> {
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err("the OpenAPI document has no paths".into());
    };
    for (path, item) in paths {
        let item = resolve(doc, item, 0);
        let shared: Vec<Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            let Some(op) = item.get(method) else { continue };
            let name = tool_name(method, path, op);
            let mut properties = Map::new();
            let mut required = Vec::new();
            let mut params = Vec::new();
            let own: Vec<Value> = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in shared.iter().chain(own.iter()) {
                let (Some(pname), Some(loc)) = (
                    p.get("name").and_then(Value::as_str),
                    p.get("in").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let location = match loc {
                    "path" => In::Path,
                    "query" => In::Query,
                    "header" => In::Header,
                    _ => continue, // cookies are the client's business
                };
                let mut schema = p
                    .get("schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "string"}));
                if let (Some(d), Value::Object(s)) = (p.get("description"), &mut schema) {
                    s.insert("description".into(), d.clone());
                }
                properties.insert(pname.to_string(), schema);
                if location == In::Path || p.get("required").and_then(Value::as_bool) == Some(true)
                {
                    required.push(Value::from(pname));
                }
                params.retain(|x: &Param| x.name != pname);
                let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(
                    !matches!(p.get("style").and_then(Value::as_str), Some(s) if s != "form"),
                );
                params.push(Param {
                    name: pname.to_string(),
                    location,
                    explode,
                });
            }
            let body_schema = op
                .pointer("/requestBody/content/application~1json/schema")
                .cloned();
            let has_body = body_schema.is_some();
            if let Some(s) = body_schema {
                properties.insert("body".into(), s);
                if op.pointer("/requestBody/required").and_then(Value::as_bool) == Some(true) {
                    required.push(Value::from("body"));
                }
            }
            let description = op
                .get("description")
                .or_else(|| op.get("summary"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let tool = json!({
                "name": name,
                "description": description,
                "inputSchema": {"type": "object", "properties": properties, "required": required},
            });
            out.push(Operation {
                name,
                method: method.to_ascii_uppercase().parse().unwrap_or(Method::GET),
                path: path.clone(),
                params,
                has_body,
                tool,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETS: &str = r##"
openapi: 3.0.3
info: {title: pets, version: "1"}
paths:
  /pets/{petId}:
    parameters:
    - {name: petId, in: path, required: true, schema: {type: integer}}
    get:
      operationId: getPet
      summary: Get a pet
      parameters:
      - {name: verbose, in: query, schema: {type: boolean}}
  /pets:
    post:
      summary: Create a pet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
components:
  schemas:
    Pet:
      type: object
      properties:
        name: {type: string}
"##;

    #[test]
    fn operations_become_tools() {
        let ops = operations(&parse_document(PETS).unwrap()).unwrap();
        let get = ops.iter().find(|o| o.name == "getPet").unwrap();
        assert_eq!(get.tool["description"], "Get a pet");
        assert_eq!(
            get.tool["inputSchema"]["properties"]["petId"]["type"],
            "integer"
        );
        assert_eq!(get.tool["inputSchema"]["required"], json!(["petId"]));
        assert_eq!(get.params.len(), 2);
        let post = ops.iter().find(|o| o.method == Method::POST).unwrap();
        assert_eq!(post.name, "post_pets", "no operationId: method and path");
        assert!(post.has_body);
        assert_eq!(
            post.tool["inputSchema"]["properties"]["body"]["properties"]["name"]["type"], "string",
            "the $ref was resolved"
        );
        assert_eq!(post.tool["inputSchema"]["required"], json!(["body"]));
    }

    #[test]
    fn bad_documents_are_refused_and_refs_cannot_loop() {
        assert!(parse_document("swagger: '2.0'").is_err());
        assert!(parse_document("{]").is_err());
        let doc = json!({"a": {"$ref": "#/a"}});
        assert_eq!(resolve(&doc, &json!({"$ref": "#/a"}), 0), json!({}));
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn parameter_styles() {
        assert_eq!(simple(&json!(["a", 1, true])), "a,1,true");
        assert_eq!(simple(&json!({"x": 1, "y": "z"})), "x,1,y,z");
        assert_eq!(simple(&json!("plain")), "plain");
        let doc = parse_document(
            r#"{"openapi": "3.1.0", "paths": {"/s": {"get": {"parameters": [
                {"name": "tag", "in": "query", "schema": {"type": "array"}},
                {"name": "ids", "in": "query", "explode": false, "schema": {"type": "array"}},
                {"name": "p", "in": "query", "style": "pipeDelimited"}]}}}}"#,
        )
        .unwrap();
        let ops = operations(&doc).unwrap();
        let explode: Vec<bool> = ops[0].params.iter().map(|p| p.explode).collect();
        assert_eq!(explode, [true, false, false]);
    }
}
