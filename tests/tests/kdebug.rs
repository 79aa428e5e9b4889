#[test]
#[ignore]
fn hold() {
    let node = univrs_tests::kubelet::KubeletNode::start("kn-1").unwrap();
    println!(
        "DIR {} KUBECONFIG {}",
        node.dir.display(),
        node.cp.kubeconfig.display()
    );
    std::thread::sleep(std::time::Duration::from_secs(900));
}
