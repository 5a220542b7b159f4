"""Pass-through: a proxied request that does not go through P2P is sent to its origin as it is.

The HTTP server (http_server.py) calls the proxy's handler; the handler calls `forward` for every
request that headers.ProxyRules does not send through P2P. The answer is streamed back as the origin
sends it, never buffered.

Rules:
- Rule 1 (targets): only absolute-form targets (`http://host/path`) are forwarded; an origin-form
  target (`/path`) is answered 400, since a forward proxy needs the origin's URL (registry-mirror
  requests are resolved by the P2P side before it calls `forward`). A scheme httpx cannot speak is 400.
- Rule 2 (headers, RFC 9110 §7.6.1): hop-by-hop headers, the headers the Connection header names,
  `Proxy-*` and Host (taken from the URL) are dropped from the request; hop-by-hop and
  Connection-named headers are dropped from the answer. Everything else goes through unchanged, in
  order and original case, and nothing is added (no client default headers, no Accept-Encoding).
- Rule 3 (body): the origin's bytes are passed on raw (still content-encoded, matching the
  Content-Length and Content-Encoding passed on); redirects are passed on, not followed. `close` of
  the answer closes the origin's response, which the server always awaits.
- Rule 4 (errors): an origin that cannot be reached or breaks off before its answer's head is
  answered 502 with `X-Dragonfly-Error-Type: proxy` and a message naming the host. A failure in the
  middle of the body escapes the iterator, and the server cuts the connection (the client sees a
  truncated body).
- Rule 5 (bounded waits, STYLE 7): each request carries httpx timeouts from DEFAULT_CONNECT_TIMEOUT
  and DEFAULT_READ_TIMEOUT, set here at the call site. Per read rather than one deadline around the
  call, because a streamed body may rightly take long as a whole but must never stall.
- Rule 6 (client): the client should come from `passthrough_client()`: no environment proxies (a
  proxy that read HTTP_PROXY could forward to itself) and no cookie jar shared between clients.
"""

import http.cookiejar

import httpx

from lazyfly.p2p.proxy.http_server import ProxyRequest, ProxyResponse, error_response

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_WRITE_TIMEOUT = 60.0
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_TIMEOUTS = httpx.Timeout(
    connect=DEFAULT_CONNECT_TIMEOUT,
    read=DEFAULT_READ_TIMEOUT,
    write=DEFAULT_WRITE_TIMEOUT,
    pool=DEFAULT_CONNECT_TIMEOUT,
)


def passthrough_client() -> httpx.AsyncClient:
    """A client fit for `forward` (Rule 6); the caller owns and closes it."""
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(trust_env=False, cookies=no_cookies, timeout=_TIMEOUTS)


async def forward(client: httpx.AsyncClient, request: ProxyRequest) -> ProxyResponse:
    """Send `request` to its origin and stream the origin's answer back (Rules 1–5)."""
    if request.target.startswith("/") or "://" not in request.target:
        return error_response(400, f"proxy: {request.target!r} is not an absolute URL; a proxy needs one")
    try:
        url = httpx.URL(request.target)
        upstream = httpx.Request(
            request.method,
            url,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in _end_to_end(request.headers)],
            content=request.body,
            extensions={"timeout": _TIMEOUTS.as_dict()},
        )
    except httpx.InvalidURL as exc:
        return error_response(400, f"proxy: {request.target!r} is not a URL httpx can send: {exc}")
    if not url.host:
        return error_response(400, f"proxy: {request.target!r} names no host")
    try:
        response = await client.send(upstream, stream=True, follow_redirects=False)
    except httpx.UnsupportedProtocol as exc:
        return error_response(400, f"proxy: {request.target!r}: {exc}")
    except httpx.TransportError as exc:
        return error_response(
            502, f"proxy: cannot reach {url.host}:{url.port or _default_port(url)}: {exc!r}"
        )
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
    if "transfer-encoding" in response.headers:
        # The origin's framing was chunked; its Content-Length, if any, is void (RFC 9112 §6.3).
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    return ProxyResponse(
        status=response.status_code,
        headers=_end_to_end(headers, answer=True),
        body=response.aiter_raw(),
        close=response.aclose,
    )


def _end_to_end(headers: list[tuple[str, str]], *, answer: bool = False) -> list[tuple[str, str]]:
    """`headers` without the ones that belong to one hop (Rule 2)."""
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() in ("connection", "proxy-connection")
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | named
    kept = []
    for key, value in headers:
        lowered = key.lower()
        if lowered in dropped or (not answer and (lowered == "host" or lowered.startswith("proxy-"))):
            continue
        kept.append((key, value))
    return kept


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
