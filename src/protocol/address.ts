/** A UDP endpoint address. IPv6 addresses are written without brackets. */
export interface Address {
  address: string;
  port: number;
}
