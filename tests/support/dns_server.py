"""A real authoritative DNS server on 127.0.0.1 (UDP and TCP, one free port) for tests.

API (fixture `dns_server` gives a started server, stopped after the test):

    server.address                      "127.0.0.1:PORT", what `[dns] nameservers` takes
    server.set_zone("example.test", ZONE)  add or replace a zone while running. ZONE is one of
        - zone-file text: relative names allowed, "@" = origin; SOA and NS added if missing;
        - a dict {name: {rdtype: [values]}}, names relative to the origin ("@" = origin), e.g.
          {"@": {"TXT": ["v=spf1 -all"], "MX": ["10 mx"]}, "mx": {"A": ["192.0.2.1"]}};
          TXT values are plain text (no quotes), long ones split into 255-byte strings;
        - a dns.zone.Zone built in the test (for names a zone file cannot spell).
    server.remove_zone("example.test")
    server.mode = "answer" | "drop" | "servfail" | "refused"   (drop = never reply: timeouts)
    server.drop.add(("slow.example.test", "TXT"))   never reply to this name and type only
        ("*" as the type: every type); for per-name timeouts, e.g. one DNSBL zone down
    server.delay_s = 0.2                 wait this long before each reply
    server.queries                       list of (qname without trailing dot, rdtype) received
    server.clear_queries()
    server.stop()                        (the fixture does it)

A zone for "." serves any name; names outside every zone get REFUSED, as from a real
authoritative server. Lookups follow CNAMEs inside the served zones. Wildcards ("*.dnsbl",
RFC 4592 closest-encloser rule) are supported, which is what DNSBL zones need. Default TTL
300 s; the added SOA's minimum (the negative-cache TTL) is 60 s.

The fixture `dns_resolver` gives a gateway Resolver pointed at the server with short timeouts.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from gateway.net.dns import Resolver

Mode = Literal["answer", "drop", "servfail", "refused"]
ZoneSpec = str | Mapping[str, Mapping[str, Sequence[str]]] | dns.zone.Zone

DEFAULT_TTL = 300
NEGATIVE_TTL = 60
MAX_CNAME_CHAIN = 8
UDP_PLAIN_MAX = 512
TCP_DROP_HOLD_S = 30.0


def _quote_txt(value: str) -> str:
    data = value.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    quoted = []
    for chunk in chunks:
        text = chunk.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{text}"')
    return " ".join(quoted)


def zone_text(spec: Mapping[str, Mapping[str, Sequence[str]]]) -> str:
    """Zone-file text for a dict zone: {name: {rdtype: [values]}}."""
    lines = []
    for name, rrsets in spec.items():
        for rdtype, values in rrsets.items():
            for value in values:
                rdata = _quote_txt(value) if rdtype.upper() == "TXT" else value
                lines.append(f"{name} {DEFAULT_TTL} IN {rdtype.upper()} {rdata}")
    return "\n".join(lines) + "\n"


def parse_zone(origin: str, spec: ZoneSpec) -> dns.zone.Zone:
    origin = origin.rstrip(".") + "."
    if isinstance(spec, dns.zone.Zone):
        zone = spec
    else:
        text = spec if isinstance(spec, str) else zone_text(spec)
        zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
    apex = zone.find_node(zone.origin, create=True)
    if apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA) is None:
        soa = f"ns.invalid. hostmaster.invalid. 1 3600 600 86400 {NEGATIVE_TTL}"
        zone.replace_rdataset(zone.origin, _rdataset("SOA", soa, DEFAULT_TTL))
    if apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS) is None:
        zone.replace_rdataset(zone.origin, _rdataset("NS", "ns.invalid.", DEFAULT_TTL))
    return zone


def _rdataset(rdtype: str, text: str, ttl: int) -> dns.rdataset.Rdataset:
    return dns.rdataset.from_text(dns.rdataclass.IN, rdtype, ttl, text)


class DnsTestServer:
    """See the module docstring."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.mode: Mode = "answer"
        self.delay_s = 0.0
        self.queries: list[tuple[str, str]] = []
        self.drop: set[tuple[str, str]] = set()
        self._zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._udp, self._tcp = self._bind(host)
        self.host = host
        self.port: int = self._udp.server_address[1]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
            for s in (self._udp, self._tcp)
        ]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _bind(self, host: str) -> tuple[socketserver.UDPServer, socketserver.TCPServer]:
        # UDP first on a free port, then TCP on the same number; retry if TCP's is taken.
        last_error: OSError | None = None
        for _ in range(20):
            udp = _UdpServer((host, 0), _UdpHandler, self)
            try:
                tcp = _TcpServer((host, udp.server_address[1]), _TcpHandler, self)
            except OSError as exc:
                udp.server_close()
                last_error = exc
                continue
            return udp, tcp
        raise RuntimeError(f"no free UDP+TCP port pair: {last_error}")

    def start(self) -> DnsTestServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def set_zone(self, origin: str, spec: ZoneSpec) -> None:
        zone = parse_zone(origin, spec)
        with self._lock:
            self._zones[zone.origin] = zone

    def remove_zone(self, origin: str) -> None:
        with self._lock:
            self._zones.pop(dns.name.from_text(origin.rstrip(".") + "."), None)

    def clear_queries(self) -> None:
        with self._lock:
            self.queries.clear()

    def respond(self, wire: bytes, max_size: int | None) -> bytes | None:
        """The reply to one query in wire format, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if self.delay_s:
            self._stopping.wait(self.delay_s)
        with self._lock:
            asked = [
                (q.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(q.rdtype))
                for q in query.question
            ]
            self.queries.extend(asked)
            mode = self.mode
            dropped = any((n, t) in self.drop or (n, "*") in self.drop for n, t in asked)
            if mode == "drop" or dropped:
                return None
            response = dns.message.make_response(query)
            if mode == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
            elif mode == "refused" or len(query.question) != 1:
                response.set_rcode(dns.rcode.REFUSED)
            else:
                self._answer(response, query.question[0].name, query.question[0].rdtype)
        limit = max_size if max_size is not None else max(UDP_PLAIN_MAX, query.payload)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            return truncated.to_wire()

    def _zone_for(self, qname: dns.name.Name) -> dns.zone.Zone | None:
        matches = [o for o in self._zones if qname.is_subdomain(o)]
        return self._zones[max(matches, key=len)] if matches else None

    def _answer(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> None:
        zone = self._zone_for(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        for _ in range(MAX_CNAME_CHAIN):
            node = zone.get_node(qname) or self._wildcard(zone, qname)
            if node is None:
                if not any(n != qname and n.is_subdomain(qname) for n in zone.nodes):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response, zone)
                return
            found = node.get_rdataset(dns.rdataclass.IN, rdtype)
            if found is not None:
                response.answer.append(_rrset(qname, found))
                return
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None or rdtype == dns.rdatatype.CNAME:
                self._add_soa(response, zone)
                return
            response.answer.append(_rrset(qname, cname))
            qname = cname[0].target
            next_zone = self._zone_for(qname)
            if next_zone is None:
                return  # the target is elsewhere: a resolver would chase it, we cannot
            zone = next_zone

    @staticmethod
    def _wildcard(zone: dns.zone.Zone, qname: dns.name.Name) -> dns.node.Node | None:
        name = qname
        while name != zone.origin:
            name = name.parent()
            if any(n.is_subdomain(name) for n in zone.nodes):  # closest encloser (RFC 4592)
                return zone.get_node(dns.name.Name((b"*", *name.labels)))
        return None

    @staticmethod
    def _add_soa(response: dns.message.Message, zone: dns.zone.Zone) -> None:
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        if soa is not None:
            response.authority.append(_rrset(zone.origin, soa))


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_UdpHandler], owner: DnsTestServer
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(
        self, address: tuple[str, int], handler: type[_TcpHandler], owner: DnsTestServer
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.owner.respond(data, None)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(5)
        owner = self.server.owner
        try:
            while not owner._stopping.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                wire = _recv_exact(conn, int.from_bytes(header, "big"))
                if wire is None:
                    return
                reply = owner.respond(wire, 65535)
                if reply is None:
                    owner._stopping.wait(TCP_DROP_HOLD_S)  # like a dead server: no reply
                    return
                conn.sendall(len(reply).to_bytes(2, "big") + reply)
        except OSError:
            return


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    server = DnsTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dns_resolver(dns_server: DnsTestServer) -> Resolver:
    return Resolver([dns_server.address], timeout_s=0.5, lifetime_s=1.0, cache_entries=1000)
