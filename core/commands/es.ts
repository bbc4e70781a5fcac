import { notYet } from "./not-yet.ts";

export default notYet("es", "Elasticsearch index templates", "the Elasticsearch sink has not landed");
