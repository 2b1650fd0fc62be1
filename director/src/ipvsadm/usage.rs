//! `-h` and `--version`: ipvsadm's layout, the director's truth.

/// `--version`: ipvsadm's line, saying what actually answers.
pub fn version() -> String {
    format!(
        "ipvsadm v1.31 2019/12/24 (director v{}: ipvsadm's command line over the XDP director, not the IPVS kernel module)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `-h`: ipvsadm 1.31's usage, limited to what the director does.
pub fn help(prog: &str, director_mode: bool) -> String {
    let p = prog;
    let mut s = version();
    s.push_str(&format!(
        "Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [options]
  {p} -d virtual-service -r server-address
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} -h

"
    ));
    s.push_str(
        "Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
                                      (host: an IP address; names are not looked up)

Options:
  --scheduler    -s scheduler         one of rr|wrr|sh|mh,
                                      the default scheduler is mh (with mh-port).
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --tun-type      type                ipip, the only tunnel type here
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections (0 only)
  --l-threshold  -y lthreshold        lower threshold of connections (0 only)
  --connection   -c                   output of current connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information (there is none)
  --stats                             output of statistics information
  --rate                              output of rate information (measured over 1 s)
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            accepted; the output is always sorted
  --sort                              does nothing, for backwards compatibility
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated):
                                      sh-port, sh-fallback, mh-port, mh-fallback

Refused with an error: --sctp-service, --fwmark-service (-f), -6, --ops (-o), --pe,
non-zero thresholds, gue and gre tunnels, --start-daemon, --stop-daemon.
",
    );
    if director_mode {
        s.push_str(
            "
The director's own commands (`director help` for more):
  director attach IFACE [IFACE2] | detach [IFACE...] | status | list [--json]
  director decap attach IFACE --from DIRECTOR[,...] | decap detach IFACE
  director flood-limit [N]
State directory: `--bpffs DIR` before the ipvsadm arguments, or $DIRECTOR_BPFFS.
",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keeps_ipvsadm_words_and_says_it_is_the_director() {
        let v = version();
        assert!(v.starts_with("ipvsadm v1.31 2019/12/24 (director v"), "{v}");
        assert!(v.ends_with("not the IPVS kernel module)\n"), "{v}");
    }

    #[test]
    fn help_names_the_program_as_invoked() {
        let h = help("/usr/sbin/ipvsadm", false);
        assert!(
            h.contains("\n  /usr/sbin/ipvsadm -A|E virtual-service"),
            "{h}"
        );
        assert!(!h.contains("director attach"));
        assert!(help("director", true).contains("director attach"));
    }
}
