package metabackup.hdfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSNNTopology;

/**
 * A real HDFS on loopback for metabackup's tests, benchmarks and demo (not for production).
 *
 * <pre>
 *   HdfsCluster single   DIR READY_FILE CONTROL_PORT RPC HTTP
 *   HdfsCluster ha       DIR READY_FILE CONTROL_PORT RPC1 HTTP1 RPC2 HTTP2 [NAMESERVICE]
 *   HdfsCluster namenode DIR READY_FILE CONTROL_PORT RPC HTTP NAME_DIR
 * </pre>
 *
 * single: one NameNode and one DataNode, formatted in DIR (kept across restarts when DIR/data
 * already holds a formatted cluster).  ha: NameService NAMESERVICE ({@code hacluster} unless given)
 * with NameNodes nn1 (active) and nn2 sharing an edits directory, one DataNode.  namenode: only a
 * NameNode, started without formatting on an existing name directory (a restored one), no DataNode.
 *
 * Writes READY_FILE (JSON) once serving, then answers one-line commands on 127.0.0.1:CONTROL_PORT:
 * {@code failover FROM TO}, {@code stop-nn I}, {@code restart-nn I}, {@code roll-edits}, {@code state},
 * {@code shutdown}.  Replies {@code ok ...} or {@code error ...}.
 */
public final class HdfsCluster {
  private static final String DEFAULT_NAMESERVICE = "hacluster";

  private final String mode;
  private final File dir;
  private final Path readyFile;
  private final int[] ports;
  private final String nameDir;
  private final String nameservice;
  private MiniDFSCluster cluster;
  private int active = 0;

  private HdfsCluster(String mode, File dir, Path readyFile, int[] ports, String nameDir, String nameservice) {
    this.mode = mode;
    this.dir = dir;
    this.readyFile = readyFile;
    this.ports = ports;
    this.nameDir = nameDir;
    this.nameservice = nameservice;
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 6) {
      System.err.println("usage: HdfsCluster single|ha|namenode DIR READY_FILE CONTROL_PORT RPC HTTP [RPC2 HTTP2 [NAMESERVICE] | NAME_DIR]");
      System.exit(2);
    }
    String mode = args[0];
    int count = mode.equals("ha") ? 4 : 2;
    int[] ports = new int[count];
    for (int i = 0; i < count; i++) {
      ports[i] = Integer.parseInt(args[4 + i]);
    }
    String nameDir = mode.equals("namenode") ? args[6] : null;
    String nameservice = mode.equals("ha") && args.length > 8 ? args[8] : DEFAULT_NAMESERVICE;
    HdfsCluster launcher = new HdfsCluster(mode, new File(args[1]), Path.of(args[2]), ports, nameDir, nameservice);
    // The control port is bound before the cluster starts, so that no daemon of the cluster can take
    // it; and any failure ends the JVM (the cluster's own threads would otherwise keep it alive with
    // nobody answering the control port, or something else answering there).
    try (ServerSocket control = new ServerSocket(Integer.parseInt(args[3]), 5, InetAddress.getLoopbackAddress())) {
      launcher.start();
      Runtime.getRuntime().addShutdownHook(new Thread(launcher::shutdownQuietly));
      launcher.serve(control);
    } catch (Throwable failure) {
      failure.printStackTrace();
      System.exit(1);
    }
  }

  private Configuration baseConf() {
    Configuration conf = new HdfsConfiguration();
    conf.set(DFSConfigKeys.DFS_NAMENODE_RPC_BIND_HOST_KEY, "127.0.0.1");
    conf.set(DFSConfigKeys.DFS_NAMENODE_HTTP_BIND_HOST_KEY, "127.0.0.1");
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, true);
    conf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, 1);
    conf.setInt(DFSConfigKeys.DFS_NAMENODE_SAFEMODE_EXTENSION_KEY, 0);
    conf.setLong("dfs.heartbeat.interval", 1);
    conf.setInt(DFSConfigKeys.DFS_HA_TAILEDITS_PERIOD_KEY, 1);
    conf.set(DFSConfigKeys.DFS_DATANODE_ADDRESS_KEY, "127.0.0.1:0");
    conf.set(DFSConfigKeys.DFS_DATANODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
    conf.set(DFSConfigKeys.DFS_DATANODE_IPC_ADDRESS_KEY, "127.0.0.1:0");
    conf.set("hadoop.tmp.dir", new File(dir, "tmp").getAbsolutePath());
    return conf;
  }

  private void start() throws IOException {
    Configuration conf = baseConf();
    File base = new File(dir, "data");
    if (mode.equals("namenode")) {
      conf.set(DFSConfigKeys.DFS_NAMENODE_NAME_DIR_KEY, new File(nameDir).toURI().toString());
      conf.set(DFSConfigKeys.DFS_NAMENODE_EDITS_DIR_KEY, new File(nameDir).toURI().toString());
      cluster = new MiniDFSCluster.Builder(conf, base).numDataNodes(0).format(false).manageNameDfsDirs(false)
          .waitSafeMode(false).nameNodePort(ports[0]).nameNodeHttpPort(ports[1]).checkExitOnShutdown(false).build();
    } else if (mode.equals("ha")) {
      MiniDFSNNTopology topology = new MiniDFSNNTopology().addNameservice(
          new MiniDFSNNTopology.NSConf(nameservice)
              .addNN(new MiniDFSNNTopology.NNConf("nn1").setIpcPort(ports[0]).setHttpPort(ports[1]))
              .addNN(new MiniDFSNNTopology.NNConf("nn2").setIpcPort(ports[2]).setHttpPort(ports[3])));
      cluster = new MiniDFSCluster.Builder(conf, base).nnTopology(topology).numDataNodes(1)
          .checkExitOnShutdown(false).build();
      cluster.transitionToActive(0);
      cluster.waitActive();
    } else {
      boolean formatted = new File(base, "name-0-1/current/VERSION").exists();
      cluster = new MiniDFSCluster.Builder(conf, base).numDataNodes(1).format(!formatted)
          .nameNodePort(ports[0]).nameNodeHttpPort(ports[1]).checkExitOnShutdown(false).build();
      cluster.waitActive();
    }
    writeClientConf();
    writeReady();
  }

  private int namenodes() {
    return mode.equals("ha") ? 2 : 1;
  }

  private void writeClientConf() throws IOException {
    StringBuilder core = new StringBuilder();
    StringBuilder hdfs = new StringBuilder();
    if (mode.equals("ha")) {
      prop(core, "fs.defaultFS", "hdfs://" + nameservice);
      prop(hdfs, "dfs.nameservices", nameservice);
      prop(hdfs, "dfs.ha.namenodes." + nameservice, "nn1,nn2");
      prop(hdfs, "dfs.namenode.rpc-address." + nameservice + ".nn1", "127.0.0.1:" + ports[0]);
      prop(hdfs, "dfs.namenode.http-address." + nameservice + ".nn1", "127.0.0.1:" + ports[1]);
      prop(hdfs, "dfs.namenode.rpc-address." + nameservice + ".nn2", "127.0.0.1:" + ports[2]);
      prop(hdfs, "dfs.namenode.http-address." + nameservice + ".nn2", "127.0.0.1:" + ports[3]);
      prop(hdfs, "dfs.client.failover.proxy.provider." + nameservice,
          "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider");
    } else {
      prop(core, "fs.defaultFS", "hdfs://127.0.0.1:" + ports[0]);
      prop(hdfs, "dfs.namenode.http-address", "127.0.0.1:" + ports[1]);
    }
    prop(hdfs, "dfs.replication", "1");
    File confDir = new File(dir, "conf");
    confDir.mkdirs();
    Files.writeString(new File(confDir, "core-site.xml").toPath(), xml(core));
    Files.writeString(new File(confDir, "hdfs-site.xml").toPath(), xml(hdfs));
  }

  private static void prop(StringBuilder out, String name, String value) {
    out.append("  <property><name>").append(name).append("</name><value>").append(value).append("</value></property>\n");
  }

  private static String xml(StringBuilder properties) {
    return "<?xml version=\"1.0\"?>\n<configuration>\n" + properties + "</configuration>\n";
  }

  private synchronized void writeReady() throws IOException {
    StringBuilder out = new StringBuilder("{\"mode\": \"").append(mode).append("\", \"nameservice\": ")
        .append(mode.equals("ha") ? "\"" + nameservice + "\"" : "null")
        .append(", \"pid\": ").append(ProcessHandle.current().pid())
        .append(", \"active\": \"nn").append(active + 1).append("\", \"namenodes\": [");
    for (int i = 0; i < namenodes(); i++) {
      List<String> dirs = new ArrayList<>();
      try {
        for (java.net.URI uri : cluster.getNameDirs(i)) {
          dirs.add("\"" + new File(uri).getAbsolutePath() + "\"");
        }
      } catch (RuntimeException e) {
        dirs.add("\"" + nameDir + "\"");
      }
      out.append(i == 0 ? "" : ", ").append("{\"id\": \"nn").append(i + 1)
          .append("\", \"rpc_port\": ").append(ports[2 * i]).append(", \"http_port\": ").append(ports[2 * i + 1])
          .append(", \"name_dirs\": [").append(String.join(", ", dirs)).append("]}");
    }
    out.append("]}\n");
    Path temp = readyFile.resolveSibling(readyFile.getFileName() + ".tmp");
    Files.writeString(temp, out.toString());
    Files.move(temp, readyFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
  }

  private void serve(ServerSocket server) throws IOException {
    while (true) {
      try (Socket socket = server.accept();
           BufferedReader in = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
           PrintWriter out = new PrintWriter(socket.getOutputStream(), true, StandardCharsets.UTF_8)) {
        String line = in.readLine();
        if (line == null) {
          continue;
        }
        String reply;
        try {
          reply = "ok " + command(line.trim().split("\\s+"));
        } catch (Exception e) {
          reply = "error " + e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage()).replace('\n', ' ');
        }
        out.println(reply);
        if (line.trim().equals("shutdown")) {
          shutdownQuietly();
          System.exit(0);
        }
      }
    }
  }

  private static int index(String id) {
    return Integer.parseInt(id.replace("nn", "")) - 1;
  }

  private String command(String[] words) throws Exception {
    switch (words[0]) {
      case "failover": {
        int from = index(words[1]);
        int to = index(words[2]);
        cluster.transitionToStandby(from);
        cluster.transitionToActive(to);
        active = to;
        writeReady();
        return "active nn" + (to + 1);
      }
      case "stop-nn":
        cluster.shutdownNameNode(index(words[1]));
        return "stopped " + words[1];
      case "restart-nn": {
        int i = index(words[1]);
        cluster.restartNameNode(i, false);
        if (mode.equals("ha") && i == active) {
          cluster.transitionToActive(i);
        }
        cluster.waitActive(i);
        if (!mode.equals("namenode")) {
          cluster.waitFirstBRCompleted(i, 60000);  // writes need the DataNode registered again
        }
        return "restarted " + words[1] + (mode.equals("ha") ? (i == active ? " (active)" : " (standby)") : "");
      }
      case "roll-edits": {
        Configuration conf = cluster.getConfiguration(active);
        try (FileSystem fs = FileSystem.newInstance(cluster.getURI(active), conf)) {
          return "segment " + ((DistributedFileSystem) fs).rollEdits();
        }
      }
      case "state":
        return "active nn" + (active + 1);
      case "shutdown":
        return "bye";
      default:
        throw new IllegalArgumentException("unknown command " + words[0]);
    }
  }

  private synchronized void shutdownQuietly() {
    if (cluster != null) {
      try {
        cluster.shutdown();
      } catch (Exception e) {
        System.err.println("shutdown: " + e);
      }
      cluster = null;
    }
  }
}
