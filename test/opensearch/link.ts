/**
 * A TCP link between cpost and a real node that a test can cut: a plain
 * byte-for-byte forwarder on 127.0.0.1. `cut()` drops every connection and
 * stops listening (cpost sees ECONNREFUSED, as with a host gone), `restore()`
 * listens again on the same port. The node behind it keeps running, so
 * what it stored during the cut (a request it had taken before the cut, its
 * answer lost) is a real ambiguous failure.
 */
import type { Socket, TCPSocketListener } from "bun";

export interface Link {
  url: string;
  cut(): void;
  restore(): void;
  close(): void;
}

interface Pair {
  peer?: Socket<Pair>;
  /** Bytes for the peer before it is connected. */
  pending: Uint8Array[];
  /** Bytes this socket has not taken yet (a partial write): written on drain, in order. */
  backlog: Uint8Array[];
}

/** Writes all of `chunk`, keeping what the socket does not take now for its drain. */
function send(socket: Socket<Pair>, chunk: Uint8Array): void {
  if (socket.data.backlog.length > 0) return void socket.data.backlog.push(chunk.slice());
  const n = socket.write(chunk);
  if (n < chunk.length) socket.data.backlog.push(chunk.slice(Math.max(0, n)));
}

function drain(socket: Socket<Pair>): void {
  while (socket.data.backlog.length > 0) {
    const chunk = socket.data.backlog[0]!;
    const n = socket.write(chunk);
    if (n < chunk.length) return void (socket.data.backlog[0] = chunk.slice(Math.max(0, n)));
    socket.data.backlog.shift();
  }
}

/** Forwards 127.0.0.1:<random port> to `target` (`http://host:port`). */
export function startLink(target: string): Link {
  const { hostname, port } = new URL(target);
  const open = new Set<Socket<Pair>>();
  const listen = (at: number): TCPSocketListener<Pair> =>
    Bun.listen<Pair>({
      hostname: "127.0.0.1",
      port: at,
      socket: {
        open(client) {
          client.data = { pending: [], backlog: [] };
          open.add(client);
          void Bun.connect<Pair>({
            hostname,
            port: Number(port),
            socket: {
              open(upstream) {
                upstream.data = { peer: client, pending: [], backlog: [] };
                open.add(upstream);
                client.data.peer = upstream;
                for (const chunk of client.data.pending) send(upstream, chunk);
                client.data.pending = [];
              },
              data(upstream, chunk) {
                if (upstream.data.peer) send(upstream.data.peer, chunk);
              },
              drain,
              close(upstream) {
                open.delete(upstream);
                upstream.data.peer?.end();
              },
              error(upstream) {
                upstream.data.peer?.end();
              },
            },
          }).catch(() => client.end());
        },
        data(client, chunk) {
          if (client.data.peer) send(client.data.peer, chunk);
          else client.data.pending.push(new Uint8Array(chunk));
        },
        drain,
        close(client) {
          open.delete(client);
          client.data.peer?.end();
        },
      },
    });
  let listener: TCPSocketListener<Pair> | undefined = listen(0);
  const at = listener.port;
  return {
    url: `http://127.0.0.1:${at}`,
    cut() {
      listener?.stop(true);
      listener = undefined;
      for (const socket of open) socket.terminate();
      open.clear();
    },
    restore() {
      listener ??= listen(at);
    },
    close() {
      this.cut();
    },
  };
}
