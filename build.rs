//! Tells the tests what this machine has, so a test that needs something absent is
//! reported as ignored (with the reason) instead of passing without checking:
//! `shared_data` when the workplace's real data files are beside the clone
//! (`../shared/data`), `tansu` when the Tansu broker is on the PATH, `test_kafka` when
//! `TICKFLARE_TEST_KAFKA` names an Apache Kafka for the transactional test, `moto`
//! when moto's S3 server (`moto_server`) is on the PATH.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(shared_data)");
    println!("cargo::rustc-check-cfg=cfg(tansu)");
    println!("cargo::rustc-check-cfg=cfg(test_kafka)");
    println!("cargo::rustc-check-cfg=cfg(moto)");
    println!("cargo::rerun-if-env-changed=TICKFLARE_TEST_KAFKA");
    if std::env::var_os("TICKFLARE_TEST_KAFKA").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=test_kafka");
    }
    println!("cargo::rerun-if-changed=../shared/data");
    println!("cargo::rerun-if-env-changed=PATH");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    if std::path::Path::new(&dir).join("../shared/data").is_dir() {
        println!("cargo::rustc-cfg=shared_data");
    }
    let on_path = |bin: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
    if on_path("tansu") {
        println!("cargo::rustc-cfg=tansu");
    }
    if on_path("moto_server") {
        println!("cargo::rustc-cfg=moto");
    }
}
