// A minimal cAdvisor: the v0.55.1 library's manager (housekeeping, the
// Docker factory, the in-memory cache) behind one small JSON endpoint.
// cAdvisor's own cmd module is not on the Go module proxy (no cmd/v* tags,
// and the proxy serves no pseudo-version of it), so bench/peers.ts builds
// this instead; the sampling is cAdvisor's, only the HTTP front is ours.
//
//	cadvisor-lite --port 18080 --docker_only --housekeeping_interval=1s
//	GET /stats?id=<docker id>&count=N  ->  [{"t":ns,"cpu":ns,"mem":b,"max":b,"ws":b}, ...]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/cadvisor/cache/memory"
	"github.com/google/cadvisor/container"
	_ "github.com/google/cadvisor/container/docker/install"
	v2 "github.com/google/cadvisor/info/v2"
	"github.com/google/cadvisor/manager"
	"github.com/google/cadvisor/utils/sysfs"
	"k8s.io/klog/v2"
)

var port = flag.Int("port", 18080, "port to listen on (127.0.0.1)")

type row struct {
	T   int64  `json:"t"`
	CPU uint64 `json:"cpu"`
	Mem uint64 `json:"mem"`
	Max uint64 `json:"max"`
	WS  uint64 `json:"ws"`
}

func main() {
	klog.InitFlags(nil)
	flag.Parse()
	// the metrics cAdvisor's own binary enables by default, less the costly ones it disables
	metrics := container.MetricSet{container.CpuUsageMetrics: {}, container.MemoryUsageMetrics: {}, container.DiskIOMetrics: {}, container.ProcessMetrics: {}}
	cache := memory.New(2*time.Minute, nil)
	m, err := manager.New(cache, sysfs.NewRealSysFs(), manager.HousekeepingConfigFlags, metrics, &http.Client{}, []string{""}, []string{""}, "", 0)
	if err != nil {
		klog.Fatalf("manager: %v", err)
	}
	if err := m.Start(); err != nil {
		klog.Fatalf("start: %v", err)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		count, _ := strconv.Atoi(r.URL.Query().Get("count"))
		if count == 0 {
			count = -1
		}
		infos, err := m.GetContainerInfoV2(r.URL.Query().Get("id"), v2.RequestOptions{IdType: v2.TypeDocker, Count: count})
		rows := []row{}
		for _, ci := range infos {
			for _, s := range ci.Stats {
				x := row{T: s.Timestamp.UnixNano()}
				if s.Cpu != nil {
					x.CPU = s.Cpu.Usage.Total
				}
				if s.Memory != nil {
					x.Mem, x.Max, x.WS = s.Memory.Usage, s.Memory.MaxUsage, s.Memory.WorkingSet
				}
				rows = append(rows, x)
			}
		}
		if err != nil && len(rows) == 0 {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(rows)
	})
	klog.Fatal(http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", *port), nil))
}
