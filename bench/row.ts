/** One line of `npm run bench`: a measurement beside its baseline. */
export interface Row {
  name: string;
  seconds: number;
  baseline: string;
  baseline_seconds: number | null;
  ratio: number | null;
  unit: string;
  value: number;
  limit: number | null;
  peak_rss_gib?: number;
  note?: string;
}
