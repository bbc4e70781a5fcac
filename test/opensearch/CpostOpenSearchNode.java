import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;
import org.opensearch.transport.TransportService;

/**
 * One real OpenSearch node for cpost's tests, started the way OpenSearch's own
 * test framework starts one (MockNode): the server jar's Node with the netty4
 * HTTP/transport module and the mapper-extras module (scaled_float; every
 * distribution ships it) as classpath plugins, no distribution, no bootstrap
 * checks, no security manager. Arguments are `key=value` settings; the node's
 * home is `path.home`. Prints `http <host:port> transport <host:port>` once
 * started (the ports may be 0: the system picks), and closes on SIGTERM.
 */
public final class CpostOpenSearchNode {
  /** Node's constructor that takes classpath plugins is protected: this is its only purpose. */
  static final class TestNode extends Node {
    TestNode(Environment environment) {
      super(environment, List.of(Netty4Plugin.class, MapperExtrasPlugin.class), true);
    }
  }

  public static void main(String[] args) throws Exception {
    Settings.Builder builder = Settings.builder();
    for (String arg : args) {
      int eq = arg.indexOf('=');
      if (eq <= 0) throw new IllegalArgumentException("expected key=value, got " + arg);
      builder.put(arg.substring(0, eq), arg.substring(eq + 1));
    }
    Settings settings = builder.build();
    Path home = Paths.get(settings.get("path.home"));
    Files.createDirectories(home.resolve("config"));
    Node node = new TestNode(new Environment(settings, home.resolve("config")));
    CountDownLatch closed = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        node.close();
        node.awaitClose(20, TimeUnit.SECONDS);
      } catch (Exception e) {
        e.printStackTrace();
      }
      closed.countDown();
    }));
    node.start();
    String http = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress().toString();
    String transport = node.injector().getInstance(TransportService.class).boundAddress().publishAddress().toString();
    System.out.println("http " + http + " transport " + transport);
    System.out.flush();
    closed.await();
  }
}
