/**
 * S3 errors as S3 returns them: an error code, an HTTP status and a message, rendered as the XML
 * error document (with the request id) by the server. Every module of the S3 layer throws these;
 * StowageErrors from the store are mapped by {@link fromStowageError}.
 */
import { isStowageError, type ErrorCode } from "../../errors.js";

export class S3Error extends Error {
  readonly code: string;
  readonly status: number;
  /** Extra elements of the error document (e.g. Key, BucketName, ArgumentName). */
  readonly details: Record<string, string>;

  constructor(code: string, status: number, message: string, details: Record<string, string> = {}) {
    super(message);
    this.name = "S3Error";
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

export const s3 = {
  accessDenied: (m = "Access Denied") => new S3Error("AccessDenied", 403, m),
  signatureDoesNotMatch: (m = "The request signature we calculated does not match the signature you provided. Check your key and signing method.") =>
    new S3Error("SignatureDoesNotMatch", 403, m),
  invalidAccessKeyId: () => new S3Error("InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records."),
  requestTimeTooSkewed: () => new S3Error("RequestTimeTooSkewed", 403, "The difference between the request time and the current time is too large."),
  authorizationHeaderMalformed: (m: string) => new S3Error("AuthorizationHeaderMalformed", 400, m),
  authorizationQueryParametersError: (m: string) => new S3Error("AuthorizationQueryParametersError", 400, m),
  missingSecurityHeader: (m: string) => new S3Error("MissingSecurityHeader", 400, m),
  invalidArgument: (m: string, name?: string) => new S3Error("InvalidArgument", 400, m, name === undefined ? {} : { ArgumentName: name }),
  invalidRequest: (m: string) => new S3Error("InvalidRequest", 400, m),
  malformedXML: (m = "The XML you provided was not well-formed or did not validate against our published schema.") => new S3Error("MalformedXML", 400, m),
  badDigest: (m = "The Content-MD5 or checksum value that you specified did not match what the server received.") => new S3Error("BadDigest", 400, m),
  invalidDigest: (m = "The Content-MD5 or checksum value that you specified is not valid.") => new S3Error("InvalidDigest", 400, m),
  incompleteBody: (m = "You did not provide the number of bytes specified by the Content-Length HTTP header.") => new S3Error("IncompleteBody", 400, m),
  missingContentLength: () => new S3Error("MissingContentLength", 411, "You must provide the Content-Length HTTP header."),
  entityTooLarge: (m = "Your proposed upload exceeds the maximum allowed object size.") => new S3Error("EntityTooLarge", 400, m),
  requestHeaderSectionTooLarge: () => new S3Error("RequestHeaderSectionTooLarge", 400, "Your request header section exceeds the maximum allowed size."),
  methodNotAllowed: (m = "The specified method is not allowed against this resource.") => new S3Error("MethodNotAllowed", 405, m),
  notImplemented: (m = "A header or query you provided implies functionality that is not implemented.") => new S3Error("NotImplemented", 501, m),
  preconditionFailed: () => new S3Error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold."),
  internalError: () => new S3Error("InternalError", 500, "We encountered an internal error. Please try again."),
  serviceUnavailable: (m = "Please reduce your request rate.") => new S3Error("ServiceUnavailable", 503, m),
};

const FROM_STOWAGE: Partial<Record<ErrorCode, [string, number]>> = {
  STOWAGE_NO_SUCH_BUCKET: ["NoSuchBucket", 404],
  STOWAGE_NO_SUCH_KEY: ["NoSuchKey", 404],
  STOWAGE_BUCKET_EXISTS: ["BucketAlreadyOwnedByYou", 409],
  STOWAGE_BUCKET_NOT_EMPTY: ["BucketNotEmpty", 409],
  STOWAGE_NO_SUCH_UPLOAD: ["NoSuchUpload", 404],
  STOWAGE_INVALID_PART: ["InvalidPart", 400],
  STOWAGE_INVALID_PART_ORDER: ["InvalidPartOrder", 400],
  STOWAGE_ENTITY_TOO_SMALL: ["EntityTooSmall", 400],
  STOWAGE_INVALID_RANGE: ["InvalidRange", 416],
  STOWAGE_BAD_DIGEST: ["BadDigest", 400],
  STOWAGE_INCOMPLETE_BODY: ["IncompleteBody", 400],
  STOWAGE_INVALID_NAME: ["InvalidArgument", 400],
  STOWAGE_INVALID_ARGUMENT: ["InvalidArgument", 400],
  STOWAGE_NO_SPACE: ["ServiceUnavailable", 503],
  STOWAGE_BACKEND_IO: ["ServiceUnavailable", 503],
};

/** The S3 error for a StowageError (or InternalError for anything unexpected). */
export function fromStowageError(err: unknown): S3Error {
  if (err instanceof S3Error) return err;
  if (isStowageError(err)) {
    const mapped = FROM_STOWAGE[err.code];
    if (mapped !== undefined) {
      if (err.code === "STOWAGE_INVALID_NAME" && /bucket name/.test(err.message)) return new S3Error("InvalidBucketName", 400, err.message);
      if (err.code === "STOWAGE_INVALID_NAME" && /longer than 1024/.test(err.message)) return new S3Error("KeyTooLongError", 400, "Your key is too long");
      return new S3Error(mapped[0], mapped[1], err.message);
    }
  }
  return s3.internalError();
}
