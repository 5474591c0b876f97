package metabackup.hdfs;

import java.net.URI;
import java.util.List;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.NameNodeProxies;
import org.apache.hadoop.hdfs.server.protocol.NamenodeProtocol;
import org.apache.hadoop.hdfs.server.protocol.NamespaceInfo;
import org.apache.hadoop.hdfs.server.protocol.RemoteEditLog;
import org.apache.hadoop.hdfs.server.protocol.RemoteEditLogManifest;

/**
 * The three NameNode calls the metabackup NameNode source needs that have no HTTP form.
 * Everything else (the fsimage and the edit-log segments themselves) is fetched over the
 * NameNode's HTTP image-transfer servlet.  Prints one JSON object on stdout.
 *
 * <pre>
 *   NameNodeTool FS_URI info              namespace/cluster/block-pool ids, layout, txids
 *   NameNodeTool FS_URI roll              roll the edit log; the new segment's first txid
 *   NameNodeTool FS_URI manifest SINCE    finalized edit-log segments holding txids >= SINCE
 *   NameNodeTool FS_URI snapshot SINCE    info, then roll, then manifest SINCE, in one JVM:
 *                                         {"info": {...}, "segmentStartTxId": N, "manifest": {...}}
 * </pre>
 *
 * FS_URI is {@code hdfs://<nameservice>} (HA, resolved through the client configuration on the
 * classpath) or {@code hdfs://host:rpcport}.  All three need HDFS superuser rights.
 */
public final class NameNodeTool {
  private NameNodeTool() {
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 2) {
      System.err.println("usage: NameNodeTool FS_URI info|roll|manifest SINCE_TXID|snapshot SINCE_TXID");
      System.exit(2);
    }
    Configuration conf = new HdfsConfiguration();
    URI uri = URI.create(args[0]);
    NamenodeProtocol namenode = NameNodeProxies.createProxy(conf, uri, NamenodeProtocol.class).getProxy();
    switch (args[1]) {
      case "info":
        System.out.println(info(namenode));
        break;
      case "roll":
        try (FileSystem fs = FileSystem.newInstance(uri, conf)) {
          long segment = ((DistributedFileSystem) fs).rollEdits();
          System.out.println("{\"segmentStartTxId\": " + segment + "}");
        }
        break;
      case "manifest":
        if (args.length < 3) {
          System.err.println("manifest needs SINCE_TXID");
          System.exit(2);
        }
        System.out.println(manifest(namenode.getEditLogManifest(Long.parseLong(args[2]))));
        break;
      case "snapshot":
        if (args.length < 3) {
          System.err.println("snapshot needs SINCE_TXID");
          System.exit(2);
        }
        String before = info(namenode);
        long rolled;
        try (FileSystem fs = FileSystem.newInstance(uri, conf)) {
          rolled = ((DistributedFileSystem) fs).rollEdits();
        }
        System.out.println("{\"info\": " + before + ", \"segmentStartTxId\": " + rolled
            + ", \"manifest\": " + manifest(namenode.getEditLogManifest(Long.parseLong(args[2]))) + "}");
        break;
      default:
        System.err.println("unknown command " + args[1]);
        System.exit(2);
    }
  }

  private static String info(NamenodeProtocol namenode) throws Exception {
    NamespaceInfo ns = namenode.versionRequest();
    return "{\"namespaceId\": " + ns.getNamespaceID()
        + ", \"clusterId\": " + quote(ns.getClusterID())
        + ", \"blockPoolId\": " + quote(ns.getBlockPoolID())
        + ", \"cTime\": " + ns.getCTime()
        + ", \"layoutVersion\": " + ns.getLayoutVersion()
        + ", \"softwareVersion\": " + quote(ns.getSoftwareVersion())
        + ", \"transactionId\": " + namenode.getTransactionID()
        + ", \"mostRecentCheckpointTxId\": " + namenode.getMostRecentCheckpointTxId()
        + "}";
  }

  private static String manifest(RemoteEditLogManifest manifest) {
    StringBuilder out = new StringBuilder("{\"committedTxnId\": ").append(manifest.getCommittedTxnId());
    out.append(", \"logs\": [");
    List<RemoteEditLog> logs = manifest.getLogs();
    for (int i = 0; i < logs.size(); i++) {
      RemoteEditLog log = logs.get(i);
      out.append(i == 0 ? "" : ", ")
          .append("{\"start\": ").append(log.getStartTxId())
          .append(", \"end\": ").append(log.getEndTxId())
          .append(", \"inProgress\": ").append(log.isInProgress()).append('}');
    }
    return out.append("]}").toString();
  }

  private static String quote(String value) {
    if (value == null) {
      return "null";
    }
    StringBuilder out = new StringBuilder("\"");
    for (char c : value.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
