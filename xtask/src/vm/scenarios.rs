//! The scenarios: each builds a lab, drives its VMs and checks what it
//! claims, failing with the reason. On failure every VM's daemon log is
//! copied next to its console log.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use super::{machine::LAB_V4, Env, Lab, Scenario, Vm};

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "smoke",
        about: "one VM: the data plane attaches in native XDP mode on virtio-net and counts traffic from the lab",
        run: smoke,
    },
    Scenario {
        name: "firewall",
        about: "a customer IP in a VM: its rules drop the lab's pings in XDP, then let them through",
        run: firewall,
    },
    Scenario {
        name: "restart",
        about: "the daemon in a VM is killed and restarted under a continuous ping: not one is lost",
        run: restart,
    },
    Scenario {
        name: "lb",
        about: "a client VM reaches a VIP whose backends are containers on two node VMs (local NAT on one, DSR to the other), spread by weight",
        run: lb,
    },
    Scenario {
        name: "containers",
        about: "a container in a VM on a kernel without TCX: TC hooks attach as netlink filters, a spoofed source is dropped, the daemon restart adopts them",
        run: containers,
    },
    Scenario {
        name: "failover",
        about: "two node VMs with etcd in the lab: the holder of a customer IP is powered off, the other answers",
        run: failover,
    },
];

/// Runs `body` on a lab of `vms`; on failure keeps every VM's daemon log.
fn with_lab(env: &Env, vms: &[&str], body: impl FnOnce(&mut Lab) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut lab = env.lab(vms)?;
    let result = body(&mut lab);
    if result.is_err() {
        for vm in &mut lab.vms {
            if let Ok((_, log)) = vm.sh("cat /var/log/hostgate.log", Duration::from_secs(10)) {
                let _ = std::fs::write(vm.dir.join("hostgate.log"), log);
            }
        }
    }
    result
}

/// Gives `vm` address 198.18.60.`host` on its NIC.
fn address(vm: &mut Vm, host: u8) -> anyhow::Result<String> {
    let addr = format!("198.18.60.{host}");
    vm.ok(&format!("/usr/sbin/ip addr add {addr}/24 dev eth0 && /usr/sbin/ip link set eth0 up"))?;
    Ok(addr)
}

/// A node config for `vm`; `extra` TOML is appended.
fn config(vm: &Vm, addr: &str, extra: &str) -> String {
    format!(
        "node_name = \"{name}\"\nstate_dir = \"/var/lib/hostgate\"\nnode_addresses = [\"{addr}\"]\n\n\
         [dataplane]\nuplinks = [\"eth0\"]\nxdp_mode = \"native\"\n{extra}",
        name = vm.name
    )
}

/// Writes the config and starts `hostgate daemon` in the background; waits until it answers.
fn start_daemon(vm: &mut Vm, config: &str) -> anyhow::Result<()> {
    vm.ok(&format!("cat > /etc/hostgate/hostgate.toml <<'HGEOF'\n{config}\nHGEOF"))?;
    vm.ok("setsid hostgate daemon --config /etc/hostgate/hostgate.toml >>/var/log/hostgate.log 2>&1 &")?;
    let start = Instant::now();
    loop {
        if vm.sh("hostgate status >/dev/null", Duration::from_secs(30))?.0 == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            let log = vm.sh("tail -20 /var/log/hostgate.log", Duration::from_secs(10))?.1;
            bail!("{}: the daemon did not answer within 60 s: {log}", vm.name);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Packets the VM's data plane counted for (hook, protocol, verdict).
fn counted(vm: &mut Vm, hook: &str, proto: &str, verdict: &str) -> anyhow::Result<u64> {
    let table = vm.ok("hostgate dataplane counters")?;
    Ok(table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() >= 4 && w[0] == hook && w[1] == proto && w[2] == verdict)
        .and_then(|w| w[3].parse().ok())
        .unwrap_or(0))
}

/// Pings `addr` `count` times from the lab, 50 ms apart; how many answered.
fn ping(lab: &Lab, addr: &str, count: u32) -> anyhow::Result<u32> {
    let out = lab.ns.command("ping").args(["-c", &count.to_string(), "-i", "0.05", "-W", "1", addr]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let received = text
        .lines()
        .find_map(|l| l.split(", ").find_map(|p| p.strip_suffix(" received")).and_then(|n| n.trim().parse().ok()))
        .context("ping printed no summary")?;
    Ok(received)
}

/// Whether `addr` answers one ping within 100 ms (for polling).
fn answers(lab: &Lab, addr: &str) -> anyhow::Result<bool> {
    Ok(lab.ns.command("ping").args(["-c", "1", "-W", "0.1", addr]).output()?.status.success())
}

fn smoke(env: &mut Env) -> anyhow::Result<()> {
    with_lab(env, &["node"], |lab| {
        let vm = lab.vm("node");
        let addr = address(vm, 11)?;
        start_daemon(vm, &config(vm, &addr, ""))?;
        let status = vm.ok("hostgate status")?;
        ensure!(
            status.lines().any(|l| l.contains("eth0") && l.contains("xdp-native")),
            "not attached in native mode: {status}"
        );
        let before = counted(lab.vm("node"), "xdp-uplink", "ipv4-icmp", "pass")?;
        let answered = ping(lab, &addr, 20)?;
        ensure!(answered == 20, "{answered} of 20 pings answered through the attached program");
        let after = counted(lab.vm("node"), "xdp-uplink", "ipv4-icmp", "pass")?;
        ensure!(after - before >= 20, "the program counted {} echo requests, sent 20", after - before);
        println!("xtask: vm: native XDP on virtio-net, 20/20 pings answered and counted");
        Ok(())
    })
}

const CUSTOMER_IP: &str = "203.0.113.90";

/// A node VM holding CUSTOMER_IP for customer acme, with a rules directory.
fn customer_node(lab: &mut Lab, name: &str, host: u8, extra: &str) -> anyhow::Result<String> {
    let vm = lab.vm(name);
    let addr = address(vm, host)?;
    vm.ok("mkdir -p /etc/hostgate/rules")?;
    let pools = format!(
        "\n[ip]\npools = [\"203.0.113.0/24\"]\nannounce_interval_ms = 50\n\n[firewall]\nrules_dir = \"/etc/hostgate/rules\"\n{extra}"
    );
    start_daemon(vm, &config(vm, &addr, &pools))?;
    Ok(addr)
}

fn firewall(env: &mut Env) -> anyhow::Result<()> {
    with_lab(env, &["node"], |lab| {
        customer_node(lab, "node", 11, "")?;
        lab.ns.ip(["route", "add", "203.0.113.0/24", "dev", "br0"])?;
        let vm = lab.vm("node");
        vm.ok("hostgate customer add acme")?;
        vm.ok(&format!("hostgate ip assign {CUSTOMER_IP} --customer acme"))?;
        wait(lab, "the customer IP to answer", Duration::from_secs(30), |lab| Ok(ping(lab, CUSTOMER_IP, 1)? == 1))?;

        let vm = lab.vm("node");
        vm.ok(
            "printf 'customer acme\\ndefault allow\\ndrop icmp type echo-request\\n' > /etc/hostgate/rules/acme.rules",
        )?;
        vm.ok("hostgate rules apply")?;
        let dropped_before = counted(lab.vm("node"), "xdp-uplink", "ipv4-icmp", "drop")?;
        let answered = ping(lab, CUSTOMER_IP, 10)?;
        ensure!(answered == 0, "{answered} of 10 pings answered despite the drop rule");
        let dropped = counted(lab.vm("node"), "xdp-uplink", "ipv4-icmp", "drop")? - dropped_before;
        ensure!(dropped >= 10, "XDP dropped {dropped} echo requests, the lab sent 10");
        let stats = lab.vm("node").ok("hostgate rules stats")?;
        ensure!(stats.contains("acme"), "rules stats: {stats}");

        lab.vm("node")
            .ok("printf 'customer acme\\ndefault allow\\n' > /etc/hostgate/rules/acme.rules && hostgate rules apply")?;
        let answered = ping(lab, CUSTOMER_IP, 10)?;
        ensure!(answered == 10, "{answered} of 10 pings answered after the rule went");
        println!("xtask: vm: 10 pings dropped in XDP by the rule, 10 answered without it");
        Ok(())
    })
}

fn wait(
    lab: &mut Lab,
    what: &str,
    limit: Duration,
    mut cond: impl FnMut(&mut Lab) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond(lab)? {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn restart(env: &mut Env) -> anyhow::Result<()> {
    with_lab(env, &["node"], |lab| {
        let vm = lab.vm("node");
        let addr = address(vm, 11)?;
        start_daemon(vm, &config(vm, &addr, ""))?;
        // 200 pings over about 10 s while the daemon is killed and started again.
        let pinger = lab
            .ns
            .command("ping")
            .args(["-c", "200", "-i", "0.05", "-W", "1", &addr])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_secs(2));
        let vm = lab.vm("node");
        vm.ok("kill -9 $(pidof hostgate)")?;
        std::thread::sleep(Duration::from_secs(1));
        start_daemon(vm, &config(vm, &addr, ""))?;
        let status = vm.ok("hostgate status")?;
        ensure!(status.contains("adopted"), "the restarted daemon did not adopt the pinned link: {status}");
        let out = pinger.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("200 received"), "pings lost across the restart: {}", text.lines().last().unwrap_or(""));
        println!("xtask: vm: 200/200 pings answered across a SIGKILL and restart of the daemon");
        Ok(())
    })
}

/// The container of the `containers` scenario: namespace c1 behind veth
/// hgc1, 198.51.100.6/24, its gateway the node (198.51.100.1).
const CONTAINER_SETUP: &str = "sysctl -w net.ipv4.ip_forward=1 >/dev/null && /usr/sbin/ip netns add c1 && \
    /usr/sbin/ip link add hgc1 type veth peer name eth0 netns c1 && \
    /usr/sbin/ip addr add 198.51.100.1/24 dev hgc1 && /usr/sbin/ip link set hgc1 up && \
    nsenter --net=/run/netns/c1 /usr/sbin/ip link set lo up && \
    nsenter --net=/run/netns/c1 /usr/sbin/ip addr add 198.51.100.6/24 dev eth0 && \
    nsenter --net=/run/netns/c1 /usr/sbin/ip addr add 198.51.100.99/32 dev eth0 && \
    nsenter --net=/run/netns/c1 /usr/sbin/ip link set eth0 up && \
    nsenter --net=/run/netns/c1 /usr/sbin/ip route add default via 198.51.100.1";

fn containers(env: &mut Env) -> anyhow::Result<()> {
    with_lab(env, &["node"], |lab| {
        lab.ns.ip(["route", "add", "198.51.100.0/24", "via", "198.18.60.11"])?;
        let vm = lab.vm("node");
        let addr = address(vm, 11)?;
        vm.ok(CONTAINER_SETUP)?;
        let cfg = config(vm, &addr, "")
            .replace("uplinks = [\"eth0\"]", "uplinks = [\"eth0\"]\ncontainer_interfaces = [\"hgc1\"]");
        start_daemon(vm, &cfg)?;
        let status = vm.ok("hostgate status")?;
        ensure!(
            status.contains("tc-ingress") && status.contains("tc-egress"),
            "TC hooks not attached as netlink filters: {status}"
        );
        vm.ok(
            "hostgate customer add acme && hostgate container add web --customer acme --iface hgc1 --ip 198.51.100.6",
        )?;
        let ping = |vm: &mut Vm, from: &str| -> anyhow::Result<bool> {
            let cmd = format!("nsenter --net=/run/netns/c1 ping -c 3 -W 1 -I {from} {LAB_V4}");
            Ok(vm.sh(&cmd, Duration::from_secs(30))?.0 == 0)
        };
        ensure!(ping(vm, "198.51.100.6")?, "the container cannot reach the lab from its own address");
        ensure!(!ping(vm, "198.51.100.99")?, "a spoofed source got out");
        let list = vm.ok("hostgate container list")?;
        ensure!(list.lines().any(|l| l.contains("web") && !l.contains(" 0 ")), "no drops counted: {list}");
        // A restarted daemon finds its filters and replaces their programs in place.
        vm.ok("kill -9 $(pidof hostgate)")?;
        start_daemon(vm, &cfg)?;
        let status = vm.ok("hostgate status")?;
        ensure!(
            status.lines().filter(|l| l.contains("hgc1") && l.contains("adopted")).count() == 2,
            "the restarted daemon did not adopt both filters: {status}"
        );
        ensure!(!ping(vm, "198.51.100.99")?, "a spoofed source got out after the restart");
        ensure!(ping(vm, "198.51.100.6")?, "the container lost its way out after the restart");
        let detach = vm.ok("hostgate dataplane detach")?;
        ensure!(detach.contains("tc-ingress:hgc1") && detach.contains("tc-egress:hgc1"), "{detach}");
        println!("xtask: vm: TC as netlink filters on 6.1: spoofing dropped, adopted across a restart, detached");
        Ok(())
    })
}

/// A container in `vm`: namespace c1 behind veth hgc1 at 198.51.`net`.6/24,
/// GRO on (NAPI for XDP redirects into it), serving HTTP with `identity`.
fn web_container(vm: &mut Vm, net: u8, identity: &str) -> anyhow::Result<String> {
    let (gw, addr) = (format!("198.51.{net}.1"), format!("198.51.{net}.6"));
    let c = "nsenter --net=/run/netns/c1";
    vm.ok(&format!(
        "sysctl -w net.ipv4.ip_forward=1 >/dev/null && /usr/sbin/ip netns add c1 && \
         /usr/sbin/ip link add hgc1 type veth peer name eth0 netns c1 && \
         /usr/sbin/ip addr add {gw}/24 dev hgc1 && /usr/sbin/ip link set hgc1 up && \
         {c} /usr/sbin/ip link set lo up && {c} /usr/sbin/ip addr add {addr}/24 dev eth0 && \
         {c} /usr/sbin/ip link set eth0 up && {c} /usr/sbin/ip route add default via {gw} && \
         {c} /usr/sbin/ethtool -K eth0 gro on >/dev/null && \
         mkdir -p /www && echo {identity} > /www/index.html && {c} httpd -p 80 -h /www"
    ))?;
    Ok(addr)
}

fn lb(env: &mut Env) -> anyhow::Result<()> {
    with_lab(env, &["n1", "n2", "client"], |lab| {
        let mut backends = Vec::new();
        for (name, host, net) in [("n1", 11u8, 100u8), ("n2", 12, 101)] {
            let vm = lab.vm(name);
            let addr = address(vm, host)?;
            backends.push(web_container(vm, net, &format!("{name}-web"))?);
            let cfg = config(vm, &addr, "")
                .replace("uplinks = [\"eth0\"]", "uplinks = [\"eth0\"]\ncontainer_interfaces = [\"hgc1\"]");
            start_daemon(vm, &cfg)?;
        }
        lab.vm("n1").ok("hostgate node add n2 --address 198.18.60.12")?;
        lab.vm("n2").ok("hostgate node add n1 --address 198.18.60.11")?;
        // Both nodes hold the same declarations; each sees its own backend as local.
        for name in ["n1", "n2"] {
            let vm = lab.vm(name);
            vm.ok("hostgate vip add 203.0.113.80 --proto tcp --port 80")?;
            vm.ok(&format!(
                "hostgate backend add 203.0.113.80:80/tcp {} --mode dsr --node n1 --weight 2",
                backends[0]
            ))?;
            vm.ok(&format!(
                "hostgate backend add 203.0.113.80:80/tcp {} --mode dsr --node n2 --weight 1",
                backends[1]
            ))?;
        }
        let client = lab.vm("client");
        address(client, 20)?;
        client.ok("/usr/sbin/ip route add 203.0.113.0/24 via 198.18.60.11")?;
        let (_, out) = client.sh(
            "for i in $(seq 90); do \
             r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 203.0.113.80 80 | tail -n 1); \
             if [ -n \"$r\" ]; then echo \"$r\"; else echo failed; fi; done",
            Duration::from_secs(600),
        )?;
        let count = |who: &str| out.lines().filter(|l| l.trim() == who).count();
        let (local, remote, failed) = (count("n1-web"), count("n2-web"), count("failed"));
        println!("xtask: vm: 90 connections: {local} to n1's container (NAT, weight 2), {remote} to n2's (DSR, weight 1), {failed} failed");
        ensure!(failed == 0 && local + remote == 90, "connections failed or went astray: {out}");
        ensure!((45..=75).contains(&local) && remote >= 15, "the spread does not follow the weights 2:1");
        let tunnelled = counted(lab.vm("n1"), "xdp-uplink", "ipv4-tcp", "tx")?;
        ensure!(tunnelled >= remote as u64, "n1 tunnelled {tunnelled} packets for {remote} remote connections");
        Ok(())
    })
}

fn failover(env: &mut Env) -> anyhow::Result<()> {
    let etcd_addr = format!("{LAB_V4}:2379");
    with_lab(env, &["n1", "n2"], |lab| {
        let _etcd = hostgate_testbed::EtcdServer::start(Some(&lab.ns), etcd_addr.parse()?)?;
        let cluster = format!("\n[cluster]\netcd_endpoints = [\"http://{etcd_addr}\"]\nlease_ttl_secs = 1\n");
        lab.ns.ip(["route", "add", "203.0.113.0/24", "dev", "br0"])?;
        customer_node(lab, "n1", 11, &cluster)?;
        customer_node(lab, "n2", 12, &cluster)?;
        let n1 = lab.vm("n1");
        n1.ok("hostgate customer add acme")?;
        n1.ok(&format!("hostgate ip assign {CUSTOMER_IP} --customer acme --node n1"))?;
        wait(lab, "the customer IP on n1", Duration::from_secs(60), |lab| Ok(ping(lab, CUSTOMER_IP, 1)? == 1))?;
        // Power cut on n1; the lab pings (100 ms timeout each) until n2 answers.
        lab.vm("n1").power_off();
        let start = Instant::now();
        while !answers(lab, CUSTOMER_IP)? {
            ensure!(start.elapsed() < Duration::from_secs(30), "nobody answered for the IP within 30 s");
        }
        let gap = start.elapsed();
        ensure!(gap < Duration::from_secs(5), "failover took {gap:?}");
        let held = lab.vm("n2").ok("/usr/sbin/ip -br addr show dev eth0")?;
        ensure!(held.contains(CUSTOMER_IP), "n2 does not hold the IP: {held}");
        println!("xtask: vm: n1 powered off; {CUSTOMER_IP} answered from n2 after {:.2} s", gap.as_secs_f64());
        Ok(())
    })
}
