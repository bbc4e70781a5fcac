/**
 * HTTP listening for cpost's servers (the monitor's control API, the
 * Prometheus sink's /metrics): one parser for `host:port`, one clear
 * message for a busy port, one answer to "is this loopback only".
 */
import { CpostError } from "./errors.ts";

/** Where a server listens. */
export interface ListenAddress {
  hostname: string;
  port: number;
}

/** Parses `host:port`, `[v6]:port`, `:port` or `port` (host defaults to 127.0.0.1). */
export function parseListen(text: string, flag: string): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*))?:?(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new CpostError("usage", `${flag} ${JSON.stringify(text)} is not an address to listen on`, {
      hint: `give host:port, e.g. ${flag} 127.0.0.1:8686 (or ${flag} 0.0.0.0:8686 to accept other machines)`,
    });
  }
  const hostname = match[1] ?? (match[2] || "127.0.0.1");
  return { hostname, port };
}

/** True when only this machine can connect to the address. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** `http://host:port` for a listening server (IPv6 in brackets). */
export function urlOf(hostname: string, port: number): string {
  return `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

/**
 * Starts Bun.serve on `address`; a port already taken becomes a CpostError
 * naming the address and what to do, instead of Bun's bare EADDRINUSE.
 */
export function listenHttp(
  address: ListenAddress,
  what: string,
  flag: string,
  fetch: (request: Request, server: Bun.Server<undefined>) => Response | Promise<Response>,
): Bun.Server<undefined> {
  try {
    return Bun.serve({ hostname: address.hostname, port: address.port, fetch, idleTimeout: 30 });
  } catch (cause) {
    const code = (cause as { code?: string }).code;
    const where = urlOf(address.hostname, address.port).slice("http://".length);
    if (code === "EADDRINUSE") {
      throw new CpostError("input", `${what}: ${where} is already in use by another process`, {
        cause,
        hint: `stop the process that holds port ${address.port} (\`ss -ltnp 'sport = :${address.port}'\` shows it), or choose another with ${flag}`,
      });
    }
    if (code === "EADDRNOTAVAIL" || code === "EACCES") {
      throw new CpostError("input", `${what}: cannot listen on ${where} (${code})`, {
        cause,
        hint: `give ${flag} an address of this machine${code === "EACCES" ? " and a port above 1023 unless cpost runs as root" : ""}`,
      });
    }
    throw new CpostError("io", `${what}: cannot listen on ${where}: ${(cause as Error).message}`, { cause });
  }
}
