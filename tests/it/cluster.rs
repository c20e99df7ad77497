//! Throwaway cluster lifecycle: start, query, drop, no leaks.

use backend_schema::TempCluster;

#[test]
fn a_cluster_answers_queries_and_is_removed_on_drop() {
    let cluster = TempCluster::start().expect("start a throwaway cluster");
    let dir = cluster.dir().to_path_buf();
    let pid = cluster.server_pid();
    let mut client = cluster.client("postgres").unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
