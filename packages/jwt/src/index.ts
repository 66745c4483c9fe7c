export { bearerToken, createJwtAuthenticator } from './authenticator.js'
export {
  CHANNEL_CLAIM,
  CHANNEL_TOKEN_TYPE,
  createChannelTokens,
  INFO_CLAIM,
  type ChannelTokenClaims,
  type ChannelTokens,
  type ChannelTokensOptions,
  type JwksChannelTokensOptions,
  type PublicKeyChannelTokensOptions,
  type SecretChannelTokensOptions,
} from './channel-tokens.js'
export { claimAt, identityFrom, rolesFrom } from './claims.js'
export {
  ASYMMETRIC_ALGORITHMS,
  SYMMETRIC_ALGORITHMS,
  type AsymmetricAlgorithm,
  type ClaimPath,
  type JwksKeyOptions,
  type JwksOptions,
  type JwtAlgorithm,
  type JwtAuthenticatorOptions,
  type KeySourceOptions,
  type PublicKeyOptions,
  type SecretKeyOptions,
  type SymmetricAlgorithm,
} from './options.js'
