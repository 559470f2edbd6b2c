export interface PeerTimes {
  fwdMs: number;
  stepMs: number;
}
