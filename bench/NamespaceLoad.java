import java.net.URI;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.HdfsConfiguration;

/**
 * Namespace load for bench/namenode_backup.py, run by the JDK's source launcher with a test
 * cluster's client classpath ({@code bin/hadoop bench/NamespaceLoad.java ...}): empty files
 * created over RPC (create + close, no block, no DataNode), in one JVM, a few threads.
 *
 * <pre>
 *   NamespaceLoad FS_URI create BASE FILES PER_DIR THREADS   BASE/dNNNNN/fNNNNNNN, FILES empty files
 *   NamespaceLoad FS_URI churn BASE FILES PER_DIR OPS SEED   OPS operations on that tree: a third
 *       creates (BASE/churn/cN), a third renames (into BASE/renamed/), a third deletes, each on
 *       files picked at random (SEED) among the FILES created above, none picked twice
 * </pre>
 * Prints one JSON line: the operations done and their seconds.
 */
public final class NamespaceLoad {
  private NamespaceLoad() {
  }

  static Path file(String base, long i, int perDir) {
    return new Path(String.format("%s/d%05d/f%07d", base, i / perDir, i));
  }

  public static void main(String[] args) throws Exception {
    Configuration conf = new HdfsConfiguration();
    URI uri = URI.create(args[0]);
    String base = args[2];
    long files = Long.parseLong(args[3]);
    int perDir = Integer.parseInt(args[4]);
    long started = System.nanoTime();
    long ops = 0;
    try (FileSystem fs = FileSystem.newInstance(uri, conf)) {
      if (args[1].equals("create")) {
        int threads = Integer.parseInt(args[5]);
        for (long d = 0; d * perDir < files; d++) {
          fs.mkdirs(new Path(String.format("%s/d%05d", base, d)));
        }
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<Long>> done = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
          final int first = t;
          done.add(pool.submit(() -> {
            long n = 0;
            for (long i = first; i < files; i += threads) {
              fs.create(file(base, i, perDir), false).close();
              n++;
            }
            return n;
          }));
        }
        for (Future<Long> f : done) {
          ops += f.get();
        }
        pool.shutdown();
      } else if (args[1].equals("churn")) {
        long total = Long.parseLong(args[5]);
        java.util.Random random = new java.util.Random(Long.parseLong(args[6]));
        java.util.Set<Long> picked = new java.util.HashSet<>();
        fs.mkdirs(new Path(base + "/churn"));
        fs.mkdirs(new Path(base + "/renamed"));
        for (long k = 0; k < total; k++) {
          long kind = k % 3;
          if (kind == 0) {
            fs.create(new Path(String.format("%s/churn/c%07d", base, k)), false).close();
          } else {
            long i;
            do {
              i = (long) (random.nextDouble() * files);
            } while (!picked.add(i));
            Path victim = file(base, i, perDir);
            boolean ok = kind == 1 ? fs.rename(victim, new Path(String.format("%s/renamed/f%07d", base, i)))
                : fs.delete(victim, false);
            if (!ok) {
              throw new IllegalStateException((kind == 1 ? "rename " : "delete ") + victim + " failed");
            }
          }
          ops++;
        }
      } else {
        System.err.println("usage: NamespaceLoad FS_URI create|churn ...");
        System.exit(2);
      }
    }
    System.out.println("{\"operations\": " + ops + ", \"seconds\": " + (System.nanoTime() - started) / 1e9 + "}");
  }
}
