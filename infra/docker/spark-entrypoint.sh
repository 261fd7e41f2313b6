#!/usr/bin/env bash
# Entry point of the reclora-spark image for Spark on Kubernetes. In cluster mode the Spark Operator's
# spark-submit creates the driver pod with the arguments `driver <submit arguments>`; the driver
# then creates executor pods with the argument `executor` and their settings in SPARK_* variables.
# Any other command runs as given (e.g. `reclora ...`, `python ...`).
set -euo pipefail
: "${SPARK_HOME:?SPARK_HOME must point at the Spark installation (the pyspark package directory)}"

role="${1:-}"
case "$role" in
  driver)
    shift
    # the driver pod submits the application again, in client mode, to itself
    addr="${SPARK_DRIVER_BIND_ADDRESS:-$(hostname -i)}"
    exec "$SPARK_HOME/bin/spark-submit" --deploy-mode client \
      --conf "spark.driver.bindAddress=$addr" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$addr" \
      "$@"
    ;;
  executor)
    shift
    for v in SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY SPARK_APPLICATION_ID \
             SPARK_EXECUTOR_POD_IP; do
      [ -n "${!v:-}" ] || { echo "error: $v is not set (an executor pod gets it from the Spark driver)" >&2; exit 2; }
    done
    # JVM options the driver passes as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... (in that order)
    java_opts=()
    i=0
    while opt="SPARK_JAVA_OPT_$i" && [ -n "${!opt+set}" ]; do
      java_opts+=("${!opt}")
      i=$((i + 1))
    done
    exec java "${java_opts[@]}" -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$SPARK_HOME/jars/*${SPARK_CLASSPATH:+:$SPARK_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" --podName "${SPARK_EXECUTOR_POD_NAME:-$(hostname)}" \
      "$@"
    ;;
  "")
    echo "usage: spark-entrypoint.sh driver|executor|<command> [args]" >&2
    exit 2
    ;;
  *)
    exec "$@"
    ;;
esac
