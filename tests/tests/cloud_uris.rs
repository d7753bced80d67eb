//! Cloud table URIs built offline (there is no GCS or Azure here): `gs://` with a
//! service-account key (inline or as an application-credentials file), Azure's URI
//! shapes (`az://`, `azure://`, `adl://`, `abfs://`, `abfss://container@account…`) with an
//! account key, unknown schemes and option keys refused by name, credentials never in an
//! error or a `{:?}`; the request path (GCS RS256 JWT signing on `ring`, Azure
//! shared-key signing) against a closed local port, failing within the retry timeout; and
//! a commit's put-if-absent against a local fake server, which records the signed,
//! conditional request and answers "created", then "precondition failed".

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_format::storage::{PutOutcome, RedactedOptions};
use shoal_format::{Error, StorageOptions, Table, TableStore};

/// A throwaway 2048-bit RSA key generated for these tests (`openssl genpkey`); it belongs
/// to no account and grants nothing. GCS parses the key when the store is built, and
/// `ring` rejects anything that is not a real RSA key, so a fake string will not do.
const TEST_RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDDvIVO1KweXf9n\n\
/8/rNUqLA21tPzK68Nmi2SYhTiVelYyK0bZ/9A/VuIdOk0seovRnl/EvJAES723y\n\
ru6Ytzs21BFcOph3RrNW0mCucYEB9AzbDw8LxeQFlBU8o0DcQJQddy9u8XOQzXxj\n\
WsiSfsDXZtMZcK900ldll1mJq9k+3C4h5EFHFFR47UET+T+vpAdd9Fabo+t9eBdu\n\
qu7omIXUd2PMYw0e7N3Vk/A/ylebc5th7PdFhjpnJ7PuJE5SpMjnUh7LzsRNhnmb\n\
R9T8Qqt6HxMdEL239cRxKoD61AEDRSInoht1ppyIMKT/AmlB3jYvuNg46uIPS4Qg\n\
+tceuv7FAgMBAAECggEAA99IYdlaOFWStmt8oQISYfKk6QrdhY47N/oEw5borVjX\n\
CW4BpsFcyNUYNCk8zLPbkusSFeUn8khzS+BDDxlc3gZO+5ybJIztAlQyHnFXZIL/\n\
+BtxqEF3c9bMnsD6CQFsDLMtaIv1RdGS2uJSYneIeBpsJa4xgmWg3f0jA9K2/wPS\n\
Mu0Q0F5al9Jh8yld0QHQYYyGM2gypUpcDvH53m9Dj/6Ix/T/7mFO0XC2o93fgyFM\n\
Slg34Ztniy51olj+yAKusx8QFoPJASzYGqtapEpmSeDoSe9XWg9Tjt/nLGbKrqQ+\n\
Px59sQdzOpIOVFkn3IJY3mC8H/03Fo04xmFQmbcy0QKBgQDwDZpO4GCFLhyV1wI8\n\
xWFSMfDtBAZQFLhpqwScmgiR1x0hDYIAQshlvgNBQ00/fo7qpwaKDWMjasCwKM1Q\n\
UX08JAEDHTDF7DNuV2XZkj2gpco0GG0iL++qrdu5SOXIKEcyDhTARpKB4h71opSV\n\
N4f83uM1vDocBFWwve9HnyNluQKBgQDQvUIAVbAqFjLAD5YqCTw2urFrYgbXCvTs\n\
Ms9Ufxwlf/Mij+2cVaDs1mYdvhch/Cc/j3VW17kG4Fz7HvVsk/gehfSPLYHA+sbL\n\
x+Oyn57YB1W6BskRO96vZNVV/+6ZuFp3rf2+y7sZjwJm6gHHeC3eV+wk3JYaGxch\n\
jw9Q5jWnbQKBgC1RJBRH33DE57iRwmZejKTLsMPNwrNTdgzcsB4wJfYCOgmHV0dd\n\
VB+A43RqlCasaaZ6qY1eQZzqBj47Nac3+wBje51u4Uo78OmfriaIqQGuyqFTCyct\n\
DX2XHKe5z0cd83LLnbc+m2HRoi6U5p/Uv+NI4HPAeOfZGaQn9wf6TuBhAoGAMSOc\n\
mf+SDRZUtCn3K8YoyqmAgsr82TrXFZOQg0+5DIrmbch8I0V1MMv4FiBdyb5WbvwS\n\
n3MBN8ExolxTYlAjJOxb+ii4VvmyOt6/l5lEB48Se0yFoOz7K0cNgcVSIhXoFix7\n\
g6LqVMX5xshnytFb2u/Pw426OEMQWvIWpPDMyLECgYEAnIeZxz5GPrkc1uoWxje1\n\
yoSA23I8KSvTug5vl2ndnLZA0TK1XKndIgJeiOk811nUZLHjlKlqlq9i8bOxSXs9\n\
0P/pRfn9BaqF9JCmhi6ovXk2LJbDFRNNWAfqZetWd7Q18+UctwUTD9UPjxWTzFsY\n\
1BCzihfsaBxE784NTUW3RHI=\n\
-----END PRIVATE KEY-----";

/// A line from the middle of the key: must never show up in an error or a `{:?}`.
fn key_fragment() -> &'static str {
    TEST_RSA_KEY.lines().nth(5).unwrap()
}

/// A fake account key: valid base64, and recognisable.
const AZURE_KEY: &str = "U0hPQUxTRUNSRVRBQ0NPVU5US0VZU0hPQUxTRUNSRVRBQ0NPVU5US0VZ";

fn service_account_json() -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "shoal-test",
        "private_key_id": "0123456789abcdef",
        "private_key": TEST_RSA_KEY,
        "client_email": "shoal-test@shoal-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    })
    .to_string()
}

fn options(pairs: &[(&str, &str)]) -> StorageOptions {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn azure_options() -> StorageOptions {
    options(&[
        ("azure_storage_account_name", "shoalacct"),
        ("azure_storage_account_key", AZURE_KEY),
    ])
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn open_err(uri: &str, options: &StorageOptions) -> String {
    match TableStore::from_uri_with_options(uri, options) {
        Ok(store) => panic!("{uri} opened: {store:?}"),
        Err(e) => {
            eprintln!("{uri}: {e}");
            format!("{e} / {e:?}")
        }
    }
}

fn assert_hidden(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "`{secret}` shown in: {text}");
    }
}

#[test]
fn gcs_with_a_service_account_key() {
    let sa = service_account_json();
    let uri = "gs://shoal-bucket/warehouse/people";
    let store =
        TableStore::from_uri_with_options(uri, &options(&[("google_service_account_key", &sa)]))
            .unwrap();
    assert_eq!(store.uri(), uri);
    assert!(store.atomic_create(), "GCS creates only if absent");
    let shown = format!("{store:?}");
    assert!(shown.contains(uri), "{shown}");
    assert_hidden(&shown, &[key_fragment(), "PRIVATE KEY"]);

    // Keys are case-insensitive; object_store's short aliases work too.
    TableStore::from_uri_with_options(uri, &options(&[("Service_Account_Key", &sa)])).unwrap();
}

#[test]
fn gcs_with_an_application_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.json");
    std::fs::write(&path, service_account_json()).unwrap();
    let uri = "gs://shoal-bucket/t";
    let store = TableStore::from_uri_with_options(
        uri,
        &options(&[("google_application_credentials", path.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(store.uri(), uri);

    // A missing file is an error at open time. Its "path" is not echoed: option values
    // never are, and a key pasted into the path option would otherwise be.
    let missing = dir.path().join("missing.json");
    let e = open_err(
        uri,
        &options(&[("google_service_account", missing.to_str().unwrap())]),
    );
    assert!(e.contains("Unable to open service account file"), "{e}");
    assert_hidden(&e, &["missing.json"]);
    let sa = service_account_json();
    let e = open_err(uri, &options(&[("google_service_account", &sa)]));
    assert_hidden(&e, &[key_fragment(), "PRIVATE KEY"]);
}

#[test]
fn gcs_bad_credentials_are_refused_without_quoting_them() {
    let uri = "gs://shoal-bucket/t";
    // Not an RSA key: refused when the store is built, not at the first request.
    let fake = serde_json::json!({
        "private_key": "-----BEGIN PRIVATE KEY-----\nU0VDUkVUUFJJVkFURUtFWQ==\n-----END PRIVATE KEY-----\n",
        "private_key_id": "k",
        "client_email": "a@b",
    })
    .to_string();
    let e = open_err(uri, &options(&[("google_service_account_key", &fake)]));
    assert!(e.contains("GCS") || e.contains("RSA"), "{e}");
    assert_hidden(&e, &["U0VDUkVUUFJJVkFURUtFWQ"]);

    // A JSON type error would quote the offending string: reduced to line and column.
    let wrong_type = serde_json::json!({
        "private_key": TEST_RSA_KEY,
        "private_key_id": "k",
        "client_email": "a@b",
        "disable_oauth": "TOPSECRETVALUE-in-the-wrong-field",
    })
    .to_string();
    let e = open_err(
        uri,
        &options(&[("google_service_account_key", &wrong_type)]),
    );
    assert!(e.contains("not valid JSON"), "{e}");
    assert_hidden(&e, &["TOPSECRETVALUE", key_fragment()]);

    // Not JSON at all.
    let e = open_err(
        uri,
        &options(&[("google_service_account_key", "TOPSECRET-not-json")]),
    );
    assert_hidden(&e, &["TOPSECRET"]);

    // Unknown keys are named, their values never shown.
    let e = open_err(
        uri,
        &options(&[
            ("google_service_account_key", &service_account_json()),
            ("google_no_such_option", "TOPSECRET2"),
        ]),
    );
    assert!(e.contains("google_no_such_option"), "{e}");
    assert_hidden(&e, &["TOPSECRET2", key_fragment()]);

    // Another cloud's keys do not apply.
    let e = open_err(uri, &options(&[("aws_secret_access_key", "TOPSECRET3")]));
    assert!(e.contains("aws_secret_access_key"), "{e}");
    assert_hidden(&e, &["TOPSECRET3"]);

    let e = open_err("gs:///no-bucket", &StorageOptions::new());
    assert!(e.contains("bucket"), "{e}");
}

#[test]
fn azure_uri_shapes() {
    let o = azure_options();
    for uri in [
        "az://container/warehouse/people",
        "azure://container/warehouse/people",
        "adl://container/warehouse/people",
        "abfs://container/warehouse/people",
        "abfss://container/warehouse/people",
        "AZ://container/t",
    ] {
        let store =
            TableStore::from_uri_with_options(uri, &o).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(store.uri(), uri);
        assert!(store.atomic_create(), "Azure creates only if absent");
        assert_hidden(&format!("{store:?}"), &[AZURE_KEY]);
    }
    // The Hadoop form names the account itself.
    for uri in [
        "abfss://container@shoalacct.dfs.core.windows.net/warehouse/people",
        "abfs://container@shoalacct.blob.core.windows.net/t",
        "az://container@shoalacct.dfs.core.windows.net/t",
    ] {
        let store = TableStore::from_uri_with_options(
            uri,
            &options(&[("azure_storage_account_key", AZURE_KEY)]),
        )
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(store.uri(), uri);
    }
    // Hosts object_store does not recognise, and containers with dots, are refused.
    for uri in [
        "abfss://container@shoalacct.example.com/t",
        "az://con.tainer/t",
        "az:///t",
    ] {
        let e = open_err(uri, &o);
        assert!(e.contains("invalid table location"), "{uri}: {e}");
        assert_hidden(&e, &[AZURE_KEY]);
    }
}

#[test]
fn azure_bad_options_are_refused_without_quoting_them() {
    let uri = "az://container/t";
    let mut o = azure_options();
    o.insert("azure_no_such_option".into(), "TOPSECRET".into());
    let e = open_err(uri, &o);
    assert!(e.contains("azure_no_such_option"), "{e}");
    assert_hidden(&e, &["TOPSECRET", AZURE_KEY]);

    // A key that is not base64: the decoder's error (which quotes a symbol) is withheld.
    let bad_key = "TOPSECRET-not-base64!";
    let e = open_err(
        uri,
        &options(&[
            ("azure_storage_account_name", "shoalacct"),
            ("azure_storage_account_key", bad_key),
        ]),
    );
    assert!(e.contains("Access Key"), "{e}");
    assert_hidden(&e, &[bad_key, "TOPSECRET", "symbol"]);

    // No account and no emulator: refused, and said so.
    let e = open_err(uri, &options(&[("azure_storage_account_key", AZURE_KEY)]));
    assert!(e.contains("Account must be specified"), "{e}");
    assert_hidden(&e, &[AZURE_KEY]);

    // A SAS token given whole builds; its value never shows in the options' `{:?}`.
    let sas = "sv=2024-01-01&ss=b&srt=co&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=TOPSECRETSIG";
    let mut with_sas = options(&[
        ("azure_storage_account_name", "shoalacct"),
        ("azure_storage_sas_token", sas),
    ]);
    TableStore::from_uri_with_options(uri, &with_sas).unwrap();
    with_sas.insert("azure_client_secret".into(), "TOPSECRETCLIENT".into());
    let redacted = RedactedOptions(with_sas);
    let shown = format!("{redacted:?}");
    assert!(shown.contains("azure_storage_sas_token"), "{shown}");
    assert_hidden(&shown, &["TOPSECRETSIG", "TOPSECRETCLIENT"]);
}

#[test]
fn unknown_schemes_are_refused_by_name() {
    for (uri, scheme) in [
        ("hdfs://x/y", "hdfs"),
        ("http://example.com/t", "http"),
        ("https://shoalacct.blob.core.windows.net/c/t", "https"),
        ("gcs://bucket/t", "gcs"),
        ("wasbs://c@a.blob.core.windows.net/t", "wasbs"),
    ] {
        let e = open_err(uri, &StorageOptions::new());
        assert!(e.contains(&format!("`{scheme}` scheme")), "{e}");
        assert!(e.contains("gs://") && e.contains("abfss://"), "{e}");
    }
    assert!(open_err("gcs://bucket/t", &StorageOptions::new()).contains("gs://bucket/prefix"));
}

/// Opening a table whose store refuses connections fails with a storage error within
/// the retry timeout, and the error does not quote the credentials.
async fn unreachable(uri: &str, options: &StorageOptions, secrets: &[&str]) {
    let table = Table::at_with_options(uri, options).unwrap();
    let started = Instant::now();
    let result = table.snapshot().await;
    let took = started.elapsed();
    let e = match result {
        Ok(_) => panic!("{uri}: a snapshot from a closed port"),
        Err(e) => e,
    };
    let text = format!("{e} / {e:?}");
    eprintln!("{uri}: failed after {took:?}: {e}");
    assert!(matches!(e, Error::Storage(_)), "{uri}: {text}");
    assert!(
        took < Duration::from_secs(20),
        "{uri}: took {took:?}: {text}"
    );
    assert_hidden(&text, secrets);
}

#[tokio::test]
async fn azure_request_path_fails_fast_against_a_closed_port() {
    // The emulator flag ignores `azure_storage_endpoint` (object_store reads its URL from
    // AZURITE_BLOB_STORAGE_URL only), so this is the real shared-key path with an
    // explicit endpoint: requests are signed (HMAC-SHA256 on ring) and then refused.
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut o = azure_options();
    o.insert("azure_storage_endpoint".into(), endpoint);
    o.insert("azure_allow_http".into(), "true".into());
    o.insert("shoal_retry_timeout".into(), "1s".into());
    unreachable("az://container/warehouse/t", &o, &[AZURE_KEY]).await;

    // A SAS token travels in the query string; object_store then leaves the request URL
    // out of its errors.
    o.remove("azure_storage_account_key");
    o.insert(
        "azure_storage_sas_token".into(),
        "sv=2024-01-01&sp=rwdl&se=2099-01-01T00:00:00Z&sig=TOPSECRETSIG".into(),
    );
    unreachable("az://container/warehouse/t", &o, &["TOPSECRETSIG"]).await;
}

#[tokio::test]
async fn gcs_request_path_fails_fast_against_a_closed_port() {
    // A service-account key makes object_store sign its own JWT (RS256 on ring) before
    // each request, with no token exchange; `google_base_url` then sends the request to a
    // closed port.
    let sa = service_account_json();
    let o = options(&[
        ("google_service_account_key", &sa),
        (
            "google_base_url",
            &format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("allow_http", "true"),
        ("shoal_retry_timeout", "1s"),
    ]);
    unreachable(
        "gs://shoal-bucket/warehouse/t",
        &o,
        &[key_fragment(), "PRIVATE KEY"],
    )
    .await;
}

/// One request a [`fake_server`] received: the request line and the headers (names in
/// lower case).
#[derive(Debug)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server on a local port answering the first requests with `replies` (a
/// status line and headers each), one connection per request, recording what it got.
fn fake_server(replies: Vec<String>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((name, value)) = h.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            log.lock().unwrap().push(Seen {
                line: line.trim_end().to_string(),
                headers,
            });
            let mut stream = reader.into_inner();
            let response = format!("{reply}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

/// Creates the table's first commit file twice through `store`'s put-if-absent: the
/// server says created, then precondition failed, which must read as "already exists".
async fn commit_twice(store: &TableStore) {
    let path = store.log_path("00000000000000000000.json");
    let data = Bytes::from_static(b"{\"commitInfo\":{}}\n");
    assert_eq!(
        store.put_if_absent(&path, data.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store.put_if_absent(&path, data).await.unwrap(),
        PutOutcome::AlreadyExists
    );
}

#[tokio::test]
async fn gcs_commit_is_a_signed_conditional_create() {
    let (url, seen) = fake_server(vec![
        "HTTP/1.1 200 OK\r\nETag: \"1\"\r\nx-goog-generation: 1".to_string(),
        "HTTP/1.1 412 Precondition Failed".to_string(),
    ]);
    let sa = service_account_json();
    let o = options(&[
        ("google_service_account_key", &sa),
        ("google_base_url", &url),
        ("allow_http", "true"),
    ]);
    let store = TableStore::from_uri_with_options("gs://shoal-bucket/warehouse/t", &o).unwrap();
    commit_twice(&store).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in seen.iter() {
        // object_store sends the object name as one fully percent-encoded segment.
        assert!(
            request.line.starts_with(
                "PUT /shoal%2Dbucket/warehouse%2Ft%2F%5Fdelta%5Flog%2F00000000000000000000%2Ejson "
            ),
            "{request:?}"
        );
        // XML API create-only-if-absent.
        assert_eq!(request.header("x-goog-if-generation-match"), Some("0"));
        // A self-signed JWT: header.claims.signature, the signature 256 bytes (RSA-2048
        // on ring) in unpadded base64url.
        let auth = request.header("authorization").unwrap();
        let jwt = auth.strip_prefix("Bearer ").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{auth}");
        // {"typ":"JWT","alg":"RS256","kid":"0123456789abcdef"}
        assert_eq!(
            parts[0],
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6IjAxMjM0NTY3ODlhYmNkZWYifQ"
        );
        assert_eq!(parts[2].len(), 342, "{auth}");
    }
}

#[tokio::test]
async fn azure_commit_is_a_signed_conditional_create() {
    let (url, seen) = fake_server(vec![
        "HTTP/1.1 201 Created\r\nETag: \"0x1\"".to_string(),
        "HTTP/1.1 412 Precondition Failed".to_string(),
    ]);
    let mut o = azure_options();
    o.insert("azure_storage_endpoint".into(), url);
    o.insert("azure_allow_http".into(), "true".into());
    let store = TableStore::from_uri_with_options("az://container/warehouse/t", &o).unwrap();
    commit_twice(&store).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in seen.iter() {
        assert!(
            request
                .line
                .starts_with("PUT /container/warehouse/t/_delta_log/00000000000000000000.json"),
            "{request:?}"
        );
        assert_eq!(request.header("if-none-match"), Some("*"));
        // Shared-key signing: an HMAC-SHA256 (32 bytes, 44 base64 characters).
        let auth = request.header("authorization").unwrap();
        let signature = auth.strip_prefix("SharedKey shoalacct:").unwrap();
        assert_eq!(signature.len(), 44, "{auth}");
        assert!(!auth.contains(AZURE_KEY));
    }
}
