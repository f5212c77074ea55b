//! Entra ID: client-credential tokens on the v2 (`scope`) and v1 (`resource`) endpoints, and
//! the tenant's OpenID configuration (mde-api.md §1).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::ClientConfig;
use crate::errors::AadError;
use crate::server::{Shared, Tenant};
use crate::token::{Claims, constant_time_eq, resource_of, role_resource};

/// The form fields of a token request (body, or HTTP Basic for the client credentials).
struct TokenForm {
    fields: HashMap<String, String>,
}

impl TokenForm {
    fn read(headers: &HeaderMap, body: &Bytes) -> Self {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        // Any other content type leaves the form empty, as the service then sees no fields.
        let mut fields: HashMap<String, String> = if is_form {
            url::form_urlencoded::parse(body).into_owned().collect()
        } else {
            HashMap::new()
        };
        if let Some((id, secret)) = basic_credentials(headers) {
            fields.entry("client_id".into()).or_insert(id);
            fields.entry("client_secret".into()).or_insert(secret);
        }
        TokenForm { fields }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// `Authorization: Basic` client credentials (RFC 6749 §2.3.1), as Entra and Vectra accept them.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn missing(field: &str, st: &Shared) -> AadError {
    AadError::new(
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{field}'."),
        st.now(),
    )
}

fn unknown_tenant(tenant: &str, error: &'static str, st: &Shared) -> AadError {
    AadError::new(
        error,
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
        st.now(),
    )
}

/// Tenant, grant type and client credentials: the checks v1 and v2 share, in the order the
/// service makes them (the app must exist before its secret is compared).
fn authenticate(
    st: &Shared,
    tenant_id: &str,
    form: &TokenForm,
) -> Result<(Arc<Tenant>, ClientConfig), AadError> {
    let tenant = st
        .tenant(tenant_id)
        .ok_or_else(|| unknown_tenant(tenant_id, "invalid_request", st))?;
    let grant = form
        .get("grant_type")
        .ok_or_else(|| missing("grant_type", st))?;
    if grant != "client_credentials" {
        return Err(AadError::new(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
            st.now(),
        ));
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| missing("client_id", st))?;
    let client = tenant
        .clients
        .iter()
        .find(|c| c.client_id.eq_ignore_ascii_case(client_id))
        .ok_or_else(|| {
            AadError::new(
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    tenant.id
                ),
                st.now(),
            )
        })?
        .clone();
    let Some(secret) = form.get("client_secret") else {
        return Err(AadError::new(
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".into(),
            st.now(),
        ));
    };
    if !constant_time_eq(
        secret.as_bytes(),
        client.client_secret.expose_secret().as_bytes(),
    ) {
        return Err(AadError::new(
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                client.client_id
            ),
            st.now(),
        ));
    }
    Ok((tenant, client))
}

fn unknown_resource(resource: &str, tenant: &Tenant, st: &Shared) -> AadError {
    AadError::new(
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            tenant.id
        ),
        st.now(),
    )
}

/// The resource a v2 `scope` names: exactly one `<resource>/.default`.
fn scope_resource(st: &Shared, tenant: &Tenant, scope: &str) -> Result<String, AadError> {
    let mut resources = Vec::new();
    for s in scope.split_whitespace() {
        let Some(resource) = s.strip_suffix("/.default") else {
            return Err(AadError::new(
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
                st.now(),
            ));
        };
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    match resources.as_slice() {
        [one] if resource_of(one).is_some() => Ok((*one).to_owned()),
        [one] => Err(unknown_resource(one, tenant, st)),
        _ => Err(AadError::new(
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
            st.now(),
        )),
    }
}

/// Signs a token for `resource` with the client's roles on that resource.
fn issue(st: &Shared, tenant: &Tenant, client: &ClientConfig, resource: &str) -> (String, i64) {
    let now = st.now().unix_seconds();
    let lifetime = i64::try_from(st.config.token_lifetime_secs).unwrap_or(3599);
    let api = resource_of(resource);
    let claims = Claims {
        aud: resource.trim_end_matches('/').to_owned(),
        iss: format!("https://sts.windows.net/{}/", tenant.id),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        appid: client.client_id.clone(),
        tid: tenant.id.clone(),
        roles: client
            .roles
            .iter()
            .filter(|r| Some(role_resource(r)) == api)
            .cloned()
            .collect(),
        oid: uuid::Uuid::new_v4().to_string(),
        ver: "1.0".to_owned(),
    };
    tenant.live().tokens_issued += 1;
    (st.signer.issue(&claims), lifetime)
}

pub async fn token_v2(
    State(st): State<Shared>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = TokenForm::read(&headers, &body);
    let result = authenticate(&st, &tenant_id, &form).and_then(|(tenant, client)| {
        let scope = form.get("scope").ok_or_else(|| missing("scope", &st))?;
        let resource = scope_resource(&st, &tenant, scope)?;
        Ok(issue(&st, &tenant, &client, &resource))
    });
    match result {
        Ok((token, lifetime)) => axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn token_v1(
    State(st): State<Shared>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = TokenForm::read(&headers, &body);
    let result = authenticate(&st, &tenant_id, &form).and_then(|(tenant, client)| {
        let resource = form
            .get("resource")
            .ok_or_else(|| missing("resource", &st))?;
        if resource_of(resource).is_none() {
            return Err(unknown_resource(resource, &tenant, &st));
        }
        let (token, lifetime) = issue(&st, &tenant, &client, resource);
        Ok((token, lifetime, resource.to_owned()))
    });
    match result {
        // v1 writes every number as a string (mde-api.md §1.3).
        Ok((token, lifetime, resource)) => {
            let now = st.now().unix_seconds();
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": lifetime.to_string(),
                "ext_expires_in": lifetime.to_string(),
                "expires_on": (now + lifetime).to_string(),
                "not_before": now.to_string(),
                "resource": resource,
                "access_token": token,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn openid_configuration(
    State(st): State<Shared>,
    Path(tenant_id): Path<String>,
) -> Response {
    let Some(tenant) = st.tenant(&tenant_id) else {
        return unknown_tenant(&tenant_id, "invalid_tenant", &st).into_response();
    };
    let base = &st.base_url;
    let tid = &tenant.id;
    axum::Json(json!({
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
                             "tid", "ver", "oid", "roles", "appid"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    }))
    .into_response()
}
