#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Mock, Reply, with_tokens};
use culprit_mde::{Cloud, Endpoints, HuntingApi, MdeClient, MdeError};
use serde_json::json;
use url::Url;

/// (cloud, serde name, login, graph, MDE API, portal, MDE audience, Graph audience)
type Row = (
    Cloud,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const TABLE: [Row; 7] = [
    (
        Cloud::Commercial,
        "commercial",
        "login.microsoftonline.com",
        "graph.microsoft.com",
        "api.securitycenter.microsoft.com",
        "security.microsoft.com",
        "https://api.securitycenter.microsoft.com",
        "https://graph.microsoft.com",
    ),
    (
        Cloud::CommercialUs,
        "commercial_us",
        "login.microsoftonline.com",
        "graph.microsoft.com",
        "api-us.securitycenter.microsoft.com",
        "security.microsoft.com",
        "https://api.securitycenter.microsoft.com",
        "https://graph.microsoft.com",
    ),
    (
        Cloud::CommercialEu,
        "commercial_eu",
        "login.microsoftonline.com",
        "graph.microsoft.com",
        "api-eu.securitycenter.microsoft.com",
        "security.microsoft.com",
        "https://api.securitycenter.microsoft.com",
        "https://graph.microsoft.com",
    ),
    (
        Cloud::CommercialUk,
        "commercial_uk",
        "login.microsoftonline.com",
        "graph.microsoft.com",
        "api-uk.securitycenter.microsoft.com",
        "security.microsoft.com",
        "https://api.securitycenter.microsoft.com",
        "https://graph.microsoft.com",
    ),
    (
        Cloud::Gcc,
        "gcc",
        "login.microsoftonline.com",
        "graph.microsoft.com",
        "api-gcc.securitycenter.microsoft.us",
        "security.microsoft.com",
        "https://api-gcc.securitycenter.microsoft.us",
        "https://graph.microsoft.com",
    ),
    (
        Cloud::GccHigh,
        "gcc_high",
        "login.microsoftonline.us",
        "graph.microsoft.us",
        "api-gov.securitycenter.microsoft.us",
        "security.microsoft.us",
        "https://api-gov.securitycenter.microsoft.us",
        "https://graph.microsoft.us",
    ),
    (
        Cloud::Dod,
        "dod",
        "login.microsoftonline.us",
        "dod-graph.microsoft.us",
        "api-gov.securitycenter.microsoft.us",
        "security.apps.mil",
        "https://api-gov.securitycenter.microsoft.us",
        "https://dod-graph.microsoft.us",
    ),
];

#[test]
fn every_cloud_has_its_hosts_and_audiences() {
    assert_eq!(TABLE.len(), Cloud::ALL.len());
    for (cloud, name, login, graph, mde, portal, mde_aud, graph_aud) in TABLE {
        let e = cloud.endpoints();
        let host = |u: &Url| u.host_str().unwrap().to_owned();
        assert_eq!(
            [
                host(&e.login),
                host(&e.graph),
                host(&e.mde_api),
                host(&e.portal)
            ],
            [login, graph, mde, portal],
            "{cloud:?}"
        );
        for u in [&e.login, &e.graph, &e.mde_api, &e.portal] {
            assert_eq!(u.scheme(), "https");
        }
        e.validate().unwrap();
        let info = cloud.info();
        assert_eq!(
            (info.mde_audience, info.graph_audience),
            (mde_aud, graph_aud),
            "{cloud:?}"
        );
        assert_eq!(serde_json::to_value(cloud).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<Cloud>(json!(name)).unwrap(), cloud);
    }
}

#[tokio::test]
async fn each_cloud_asks_for_its_own_scopes_over_the_overridden_endpoints() {
    for (cloud, _, _, _, _, _, mde_aud, graph_aud) in TABLE {
        let mock = Mock::start(with_tokens(|r| {
            if r.path().starts_with("/api/machines") {
                Reply::json(200, json!({"value": []}))
            } else {
                Reply::json(200, json!({"schema": [], "results": []}))
            }
        }))
        .await;
        let mut cfg = mock.config();
        cfg.cloud = cloud;
        let client = MdeClient::new(cfg).unwrap();
        client.hunt_via(HuntingApi::Graph, "T", None).await.unwrap();
        client.hunt_via(HuntingApi::Mde, "T", None).await.unwrap();
        client.machines_by_dns_name("x").await.unwrap();
        let scopes: Vec<String> = mock
            .token_requests()
            .iter()
            .map(|r| r.form()["scope"].clone())
            .collect();
        assert_eq!(
            scopes,
            [
                format!("{graph_aud}/.default"),
                format!("{mde_aud}/.default")
            ],
            "{cloud:?}"
        );
        let paths: Vec<String> = mock
            .api_requests()
            .iter()
            .map(|r| r.path().to_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/v1.0/security/runHuntingQuery",
                "/api/advancedqueries/run",
                "/api/machines"
            ]
        );
    }
}

#[tokio::test]
async fn endpoints_with_a_path_prefix_are_joined_as_directories() {
    let mock = Mock::start(with_tokens(|_| {
        Reply::json(200, json!({"schema": [], "results": []}))
    }))
    .await;
    let mut cfg = mock.config();
    let base = mock.url.join("twin/graph").unwrap(); // no trailing slash on purpose
    cfg.endpoints = Some(Endpoints {
        graph: base,
        ..Endpoints::single(&mock.url)
    });
    MdeClient::new(cfg).unwrap().hunt("T", None).await.unwrap();
    assert_eq!(
        mock.api_requests()[0].path(),
        "/twin/graph/v1.0/security/runHuntingQuery"
    );
}

#[test]
fn plain_http_only_for_loopback() {
    let ok = [
        "http://127.0.0.1:8080/",
        "http://localhost:1/",
        "http://[::1]:9/",
        "https://twin.example/",
    ];
    for u in ok {
        let e = Endpoints::single(&Url::parse(u).unwrap());
        e.validate().unwrap_or_else(|err| panic!("{u}: {err}"));
    }
    let bad = [
        "http://10.0.0.5:8080/",
        "http://twin.example/",
        "ftp://127.0.0.1/",
        "http://127.0.0.1.evil.example/",
    ];
    for u in bad {
        let e = Endpoints::single(&Url::parse(u).unwrap());
        let err = e.validate().unwrap_err();
        assert!(matches!(err, MdeError::InvalidConfig { .. }), "{u}");
    }
    // The same check runs when a client is built.
    let mut cfg =
        culprit_mde::ClientConfig::new(Cloud::Gcc, "t", "c", secrecy::SecretString::from("s"));
    cfg.endpoints = Some(Endpoints {
        mde_api: Url::parse("http://api.example/").unwrap(),
        ..Cloud::Gcc.endpoints()
    });
    let err = MdeClient::new(cfg).unwrap_err();
    assert!(err.to_string().contains("endpoints.mde_api"), "{err}");
}
