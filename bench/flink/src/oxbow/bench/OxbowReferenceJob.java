package oxbow.bench;

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.Locale;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

// Flink's own shaded copy of Jackson, inside flink-dist: no extra jars on the class path.
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.annotation.JsonProperty;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.annotation.JsonPropertyOrder;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectReader;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectWriter;

/**
 * Reference job for the side-by-side benchmark against Oxbow's in-process pipeline benchmark
 * ({@code oxbow-worker bench pipeline --events N}). Both sides run the same recipe:
 *
 * <pre>
 *   generator (splitmix64, seed 42) -> [JSON encode -> JSON decode] -> filter amount >= 100
 *     -> keyBy key -> 1 s tumbling event-time window -> count + sum(amount)
 *     -> [JSON encode the window row] -> discard (checksum: rows, count, sum)
 * </pre>
 *
 * Parallelism 1, heap (hashmap) state backend, no checkpoints, streaming execution mode, object
 * reuse enabled (disable with --no-object-reuse). Prints exactly one line on stdout:
 *
 * <pre>
 * engine=flink mode=json events=N cpu_seconds=X events_per_cpu_second=Y wall_seconds=W rows=R count=C sum=S
 * </pre>
 *
 * cpu_seconds is the CPU time of the whole JVM process (all threads: task threads, JIT, GC,
 * MiniCluster services) from just before the job is submitted to an already started local
 * MiniCluster until its result is back (job deployment, task start-up, processing, end of job);
 * wall_seconds is the wall time of the same interval. JVM start-up and MiniCluster start-up/shutdown
 * are excluded (they are logged to stderr); --include-cluster-startup includes the MiniCluster's
 * start and stop, i.e. what {@code env.execute()} on a local environment would cost.
 */
public final class OxbowReferenceJob {

    // ---------------------------------------------------------------------------------------------
    // Generator: splitmix64 with state starting at 42.
    // The k-th output (1-based) uses state = 42 + k * GOLDEN, so event i (0-based), which takes the
    // (2i+1)-th and (2i+2)-th outputs, can be computed from i alone (parallel-safe, order-free).
    // ---------------------------------------------------------------------------------------------

    static final long SEED = 42L;
    static final long GOLDEN = 0x9E3779B97F4A7C15L;
    static final long KEYS = 10_000L;
    static final long AMOUNTS = 1_000L;
    static final long EVENTS_PER_SECOND = 1_000L; // per event-time millisecond: ts_ms = i / 1000
    static final long MIN_AMOUNT = 100L;

    /** splitmix64 output number k (1-based), starting from state SEED. Wrapping arithmetic. */
    static long splitmix64(long k) {
        long z = SEED + k * GOLDEN;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    static Event event(long i) {
        long r1 = splitmix64(2 * i + 1);
        long r2 = splitmix64(2 * i + 2);
        Event e = new Event();
        e.key = Long.remainderUnsigned(r1, KEYS);
        e.amount = Long.remainderUnsigned(r2, AMOUNTS);
        e.ts = i / EVENTS_PER_SECOND;
        return e;
    }

    // ---------------------------------------------------------------------------------------------
    // Types (Flink POJOs: public no-arg constructor, public fields).
    // ---------------------------------------------------------------------------------------------

    /** One input event; JSON form {"key":K,"amount":A,"ts":T}. */
    @JsonPropertyOrder({"key", "amount", "ts"})
    public static final class Event {
        public long key;
        public long amount;
        public long ts;

        public Event() {}
    }

    /** Window accumulator. */
    public static final class CountSum {
        public long count;
        public long sum;

        public CountSum() {}
    }

    /** One window result row; JSON form {"key":K,"window_start":W,"count":C,"sum":S}. */
    @JsonPropertyOrder({"key", "window_start", "count", "sum"})
    public static final class WindowRow {
        public long key;

        @JsonProperty("window_start")
        public long windowStart;

        public long count;
        public long sum;

        public WindowRow() {}
    }

    /** Default Jackson configuration, as flink-json's JSON (de)serialization schemas use it. */
    static final ObjectMapper MAPPER = new ObjectMapper();

    // ---------------------------------------------------------------------------------------------
    // Operators.
    // ---------------------------------------------------------------------------------------------

    /** --no-json: the generator emits events directly. */
    static final class GenerateEvent implements MapFunction<Long, Event> {
        @Override
        public Event map(Long i) {
            return event(i);
        }
    }

    /** --json: the generator emits each event as UTF-8 JSON bytes, encoded with Jackson. */
    static final class GenerateJson extends RichMapFunction<Long, byte[]> {
        private transient ObjectWriter writer;

        @Override
        public void open(OpenContext ctx) {
            writer = MAPPER.writerFor(Event.class);
        }

        @Override
        public byte[] map(Long i) throws Exception {
            return writer.writeValueAsBytes(event(i));
        }
    }

    /** --json: decode the JSON bytes with Jackson (databind into the POJO). */
    static final class ParseJson extends RichMapFunction<byte[], Event> {
        private transient ObjectReader reader;

        @Override
        public void open(OpenContext ctx) {
            reader = MAPPER.readerFor(Event.class);
        }

        @Override
        public Event map(byte[] json) throws Exception {
            return reader.readValue(json);
        }
    }

    static final class AmountFilter implements FilterFunction<Event> {
        @Override
        public boolean filter(Event e) {
            return e.amount >= MIN_AMOUNT;
        }
    }

    static final class ByKey implements KeySelector<Event, Long> {
        @Override
        public Long getKey(Event e) {
            return e.key;
        }
    }

    /** Incremental count + sum(amount): one small accumulator per key and window on the heap. */
    static final class CountSumAggregate implements AggregateFunction<Event, CountSum, CountSum> {
        @Override
        public CountSum createAccumulator() {
            return new CountSum();
        }

        @Override
        public CountSum add(Event e, CountSum acc) {
            acc.count += 1;
            acc.sum += e.amount;
            return acc;
        }

        @Override
        public CountSum getResult(CountSum acc) {
            return acc;
        }

        @Override
        public CountSum merge(CountSum a, CountSum b) {
            a.count += b.count;
            a.sum += b.sum;
            return a;
        }
    }

    /** Attaches key and window start to the aggregate. */
    static final class ToRow extends ProcessWindowFunction<CountSum, WindowRow, Long, TimeWindow> {
        @Override
        public void process(Long key, Context ctx, Iterable<CountSum> aggs, Collector<WindowRow> out) {
            CountSum acc = aggs.iterator().next();
            WindowRow row = new WindowRow();
            row.key = key;
            row.windowStart = ctx.window().getStart();
            row.count = acc.count;
            row.sum = acc.sum;
            out.collect(row);
        }
    }

    /**
     * Parallelism-1 checksum over the window rows (rows, count, sum) reported through accumulators;
     * with --json each row is JSON-encoded with Jackson and the bytes go to a discarding sink.
     */
    static final class ChecksumAndEncode extends ProcessFunction<WindowRow, byte[]> {
        private final boolean json;
        private transient ObjectWriter writer;
        private final LongCounter rows = new LongCounter();
        private final LongCounter count = new LongCounter();
        private final LongCounter sum = new LongCounter();

        ChecksumAndEncode(boolean json) {
            this.json = json;
        }

        @Override
        public void open(OpenContext ctx) {
            writer = MAPPER.writerFor(WindowRow.class);
            getRuntimeContext().addAccumulator("rows", rows);
            getRuntimeContext().addAccumulator("count", count);
            getRuntimeContext().addAccumulator("sum", sum);
        }

        @Override
        public void processElement(WindowRow row, Context ctx, Collector<byte[]> out) throws Exception {
            rows.add(1L);
            count.add(row.count);
            sum.add(row.sum);
            if (json) {
                out.collect(writer.writeValueAsBytes(row));
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Main.
    // ---------------------------------------------------------------------------------------------

    private static void usage(String msg) {
        System.err.println("error: " + msg);
        System.err.println("usage: OxbowReferenceJob [--events N] [--json|--no-json] [--no-object-reuse] [--include-cluster-startup]");
        System.exit(2);
    }

    public static void main(String[] args) throws Exception {
        long events = 20_000_000L;
        boolean json = true;
        boolean objectReuse = true;
        boolean includeClusterStartup = false;
        for (int a = 0; a < args.length; a++) {
            switch (args[a]) {
                case "--events":
                    if (a + 1 >= args.length) usage("--events needs a value");
                    events = Long.parseLong(args[++a].replace("_", ""));
                    break;
                case "--json":
                    json = true;
                    break;
                case "--no-json":
                    json = false;
                    break;
                case "--object-reuse":
                    objectReuse = true;
                    break;
                case "--no-object-reuse":
                    objectReuse = false;
                    break;
                case "--include-cluster-startup":
                    includeClusterStartup = true;
                    break;
                default:
                    usage("unknown argument " + args[a]);
            }
        }
        if (events < 1) usage("--events must be >= 1");

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        env.setRuntimeMode(RuntimeExecutionMode.STREAMING);
        if (objectReuse) {
            env.getConfig().enableObjectReuse();
        } else {
            env.getConfig().disableObjectReuse();
        }
        // No checkpointing is configured; the state backend is Flink's default heap ("hashmap").

        DataStream<Long> seq = env.fromSequence(0, events - 1).name("sequence");
        DataStream<Event> parsed;
        if (json) {
            parsed = seq.map(new GenerateJson()).returns(TypeInformation.of(byte[].class)).name("generate-json")
                    .map(new ParseJson()).returns(Event.class).name("parse-json");
        } else {
            parsed = seq.map(new GenerateEvent()).returns(Event.class).name("generate");
        }

        DataStream<byte[]> encoded = parsed
                // In-order input: monotonous timestamps, no out-of-orderness, no allowed lateness.
                // The final MAX watermark at end of input fires all open windows.
                .assignTimestampsAndWatermarks(
                        WatermarkStrategy.<Event>forMonotonousTimestamps()
                                .withTimestampAssigner((e, previous) -> e.ts))
                .name("timestamps")
                .filter(new AmountFilter()).name("filter")
                .keyBy(new ByKey(), Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(1)))
                .aggregate(new CountSumAggregate(), new ToRow(),
                        TypeInformation.of(CountSum.class), TypeInformation.of(CountSum.class),
                        TypeInformation.of(WindowRow.class))
                .name("window")
                .process(new ChecksumAndEncode(json), TypeInformation.of(byte[].class))
                .name("checksum")
                .setParallelism(1);
        encoded.sinkTo(new DiscardingSink<>()).name("discard").setParallelism(1);

        // The job runs in a local MiniCluster that is started before the measured interval (as a
        // Flink cluster is running before a job is submitted to it): bringing up the MiniCluster's
        // RPC, dispatcher, resource manager and task executor costs several CPU-seconds of one-off
        // class loading and JIT work that has nothing to do with event processing.
        // --include-cluster-startup puts it into the interval (env.execute() semantics).
        JobGraph jobGraph = env.getStreamGraph().getJobGraph();
        Configuration clusterConf = new Configuration();
        clusterConf.set(RestOptions.BIND_ADDRESS, "localhost");
        clusterConf.set(RestOptions.ADDRESS, "localhost");
        clusterConf.set(RestOptions.BIND_PORT, "0");
        MiniClusterConfiguration mcc = new MiniClusterConfiguration.Builder()
                .setConfiguration(clusterConf)
                .setNumTaskManagers(1)
                .setNumSlotsPerTaskManager(1)
                .build();

        com.sun.management.OperatingSystemMXBean os =
                (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        long cpuStart = os.getProcessCpuTime();
        long wallStart = System.nanoTime();
        MiniCluster cluster = new MiniCluster(mcc);
        cluster.start();
        long cpu0 = os.getProcessCpuTime();
        long wall0 = System.nanoTime();
        JobExecutionResult result = cluster.executeJobBlocking(jobGraph);
        long wall1 = System.nanoTime();
        long cpu1 = os.getProcessCpuTime();
        cluster.close();
        long cpuEnd = os.getProcessCpuTime();
        long wallEnd = System.nanoTime();
        System.err.printf(Locale.ROOT,
                "[flink] object_reuse=%s cluster_start_cpu_s=%.3f cluster_start_wall_s=%.3f job_cpu_s=%.3f job_wall_s=%.3f"
                        + " job_net_runtime_s=%.3f cluster_stop_cpu_s=%.3f%n",
                objectReuse, (cpu0 - cpuStart) / 1e9, (wall0 - wallStart) / 1e9, (cpu1 - cpu0) / 1e9,
                (wall1 - wall0) / 1e9, result.getNetRuntime() / 1e3, (cpuEnd - cpu1) / 1e9);
        if (includeClusterStartup) {
            cpu0 = cpuStart;
            wall0 = wallStart;
            cpu1 = cpuEnd;
            wall1 = wallEnd;
        }

        long rows = result.<Long>getAccumulatorResult("rows");
        long count = result.<Long>getAccumulatorResult("count");
        long sum = result.<Long>getAccumulatorResult("sum");
        double cpuSeconds = (cpu1 - cpu0) / 1e9;
        double wallSeconds = (wall1 - wall0) / 1e9;

        System.out.printf(Locale.ROOT,
                "engine=flink mode=%s events=%d cpu_seconds=%.3f events_per_cpu_second=%.0f wall_seconds=%.3f rows=%d count=%d sum=%d%n",
                json ? "json" : "no-json", events, cpuSeconds, events / cpuSeconds, wallSeconds, rows, count, sum);
        System.out.flush();
        // The local MiniCluster may leave non-daemon threads behind; do not wait for them.
        System.exit(0);
    }
}
