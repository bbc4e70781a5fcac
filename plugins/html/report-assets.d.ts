/** Files the HTML report inlines, imported as text (`with { type: "text" }`) so the compiled binary embeds them. */
declare module "uplot/dist/uPlot.iife.min.js" {
  const text: string;
  export default text;
}
declare module "uplot/dist/uPlot.min.css" {
  const text: string;
  export default text;
}
declare module "*/report-page.js" {
  const text: string;
  export default text;
}
