export { bearerToken, createJwtAuthenticator } from './authenticator.js'
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
  type PublicKeyOptions,
  type SecretKeyOptions,
  type SymmetricAlgorithm,
} from './options.js'
