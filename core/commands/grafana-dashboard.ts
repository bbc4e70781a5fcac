import { notYet } from "./not-yet.ts";

export default notYet("grafana-dashboard", "print a Grafana dashboard JSON", "the Grafana dashboard has not landed");
