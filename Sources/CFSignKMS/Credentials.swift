import CFSignSync
import Foundation

/// One set of AWS credentials. `description` never shows the secret or the session token.
public struct AWSCredentials: Sendable, CustomStringConvertible {
    public let accessKeyID: String
    public let secretAccessKey: String
    public let sessionToken: String?
    /// When temporary credentials stop working (web identity); nil for long-lived keys.
    public let expiration: Date?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String { "access key \(accessKeyID)" + (sessionToken == nil ? "" : " (temporary)") }
}

/// Where credentials come from; asked before every call (implementations cache).
public protocol CredentialProvider: Sendable {
    /// For logs and errors: "environment", "profile dev in ~/.aws/credentials", "web identity ...".
    var source: String { get }
    func credentials() async throws(KMSError) -> AWSCredentials
}

/// Long-lived (or externally refreshed) keys read once: the environment, or a profile's keys.
public struct StaticCredentials: CredentialProvider {
    public let source: String
    let value: AWSCredentials
    public init(_ value: AWSCredentials, source: String) {
        self.value = value
        self.source = source
    }
    public func credentials() async throws(KMSError) -> AWSCredentials { value }
}

/// STS `AssumeRoleWithWebIdentity` with the token in a file (as EKS mounts it): the file is read
/// again at each refresh (the kubelet rotates it). Refreshes are single-flight: one STS call at a
/// time however many signers ask. Credentials are renewed 5 minutes before they expire (or halfway
/// through their life when that is shorter); while a renewal runs, or after it failed, callers
/// keep the current credentials as long as they are still valid, and only callers with nothing
/// valid wait for the one call in flight. A failed renewal is tried again after `retryDelay`, not
/// on every call.
public final class WebIdentityCredentials: CredentialProvider {
    public let roleARN: String
    public let tokenFile: String
    public let sessionName: String
    let sts: STSClient
    public var source: String { "web identity (role \(roleARN), token file \(tokenFile))" }

    struct Held: Sendable {
        let credentials: AWSCredentials
        /// When to start renewing them.
        let renewAt: Date
        /// When they stop working (STS answers always carry an expiry; see `STSClient`).
        let expiresAt: Date
    }
    private struct State: Sendable {
        var held: Held?
        var refresh: Task<Held, any Error>?
        /// After a failed renewal, not before this; until then callers with nothing valid get `failure`.
        var retryAt: Date?
        var failure: KMSError?
        var refreshes = 0
    }
    private let state = Locked(State())
    /// Renew this long before `Expiration` (at most halfway through the credentials' life).
    static let margin: TimeInterval = 300
    /// Wait this long after a failed renewal before the next, while the current ones still work.
    static let retryDelay: TimeInterval = 5
    /// STS calls made so far, for tests of single-flight.
    public var refreshCount: Int { state.withLock { $0.refreshes } }

    /// `held`: credentials already in hand (tests start from a given point of their life).
    init(roleARN: String, tokenFile: String, sessionName: String, sts: STSClient, held: Held? = nil) {
        self.roleARN = roleARN
        self.tokenFile = tokenFile
        self.sessionName = sessionName
        self.sts = sts
        state.withLock { $0.held = held }
    }

    private enum Plan {
        case use(AWSCredentials)
        case wait(Task<Held, any Error>)
        case fail(KMSError)
    }

    public func credentials() async throws(KMSError) -> AWSCredentials {
        let plan = state.withLock { s -> Plan in
            let now = Date()
            let valid = s.held.flatMap { $0.expiresAt > now ? $0.credentials : nil }
            if let held = s.held, held.renewAt > now { return .use(held.credentials) }
            if let task = s.refresh { return valid.map(Plan.use) ?? .wait(task) }
            if let retryAt = s.retryAt, retryAt > now {
                if let valid { return .use(valid) }
                if let failure = s.failure { return .fail(failure) }
            }
            let task = Task { try await self.renew() }
            s.refresh = task
            s.refreshes += 1
            return valid.map(Plan.use) ?? .wait(task)
        }
        switch plan {
        case .use(let credentials):
            return credentials
        case .fail(let error):
            throw error
        case .wait(let task):
            do {
                return try await task.value.credentials
            } catch let error as KMSError {
                throw error
            } catch {
                throw KMSError(.credentials, code: nil, "web identity refresh failed: \(error)")
            }
        }
    }

    /// The one renewal in flight: reads the token, calls STS, and records the outcome for everyone.
    private func renew() async throws -> Held {
        do throws(KMSError) {
            let token: String
            do {
                token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw KMSError(.credentials, code: nil, "cannot read the web identity token file \(tokenFile) (AWS_WEB_IDENTITY_TOKEN_FILE): \(error.localizedDescription)")
            }
            let fetched = Date()
            let fresh = try await sts.assumeRoleWithWebIdentity(roleARN: roleARN, sessionName: sessionName, token: token)
            let held = Self.held(fresh, fetchedAt: fetched)
            state.withLock { s in
                s.held = held
                s.refresh = nil
                s.retryAt = nil
                s.failure = nil
            }
            return held
        } catch {
            state.withLock { s in
                s.refresh = nil
                s.retryAt = Date().addingTimeInterval(Self.retryDelay)
                s.failure = error
            }
            throw error
        }
    }

    /// When to renew `credentials` fetched at `fetchedAt`: `margin` before they expire, or halfway
    /// through their life when that is later (so short-lived ones are not renewed on every call).
    static func held(_ credentials: AWSCredentials, fetchedAt: Date) -> Held {
        let expiresAt = credentials.expiration ?? fetchedAt.addingTimeInterval(STSClient.assumedLifetime)
        let life = expiresAt.timeIntervalSince(fetchedAt)
        let renewAt = fetchedAt.addingTimeInterval(max(life / 2, life - margin))
        return Held(credentials: credentials, renewAt: renewAt, expiresAt: expiresAt)
    }
}

/// The `[profile]` sections of the shared config and credentials files (INI: `name = value`,
/// `#`/`;` comments). The config file names sections `[profile NAME]` except `[default]`.
public struct ProfileFile: Sendable {
    public var sections: [String: [String: String]] = [:]

    public init(text: String, isConfig: Bool) {
        var current: String? = nil
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") {
                guard let end = line.firstIndex(of: "]") else { current = nil; continue }
                var name = line[line.index(after: line.startIndex)..<end].trimmingCharacters(in: .whitespaces)
                if isConfig {
                    if name.hasPrefix("profile ") {
                        name = String(name.dropFirst("profile ".count)).trimmingCharacters(in: .whitespaces)
                    } else if name != "default" {
                        current = nil  // e.g. [sso-session x], [services x]: not a profile
                        continue
                    }
                }
                current = name
                if sections[name] == nil { sections[name] = [:] }
                continue
            }
            guard let section = current, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            // An inline comment needs a space before it (values may hold # or ;).
            for marker in [" #", " ;", "\t#", "\t;"] {
                if let r = value.range(of: marker) { value = value[..<r.lowerBound].trimmingCharacters(in: .whitespaces) }
            }
            if key.isEmpty || value.isEmpty { continue }  // nested sub-sections (s3 =) are not read
            sections[section]![key] = value
        }
    }
}

/// Finds credentials and region as the AWS SDKs do, for the cases cfsign supports: the
/// environment, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), and a profile of the
/// shared credentials/config files (`AWS_PROFILE`, default `default`) holding keys or a web
/// identity. Instance metadata (IMDS), ECS container credentials, SSO, `credential_process` and
/// `role_arn` + `source_profile` chains are not supported yet: with none of the above set, the
/// error says so.
public struct AWSEnvironment: Sendable {
    public let variables: [String: String]

    public init(_ variables: [String: String] = ProcessInfo.processInfo.environment) {
        self.variables = variables.filter { !$0.value.isEmpty }
    }

    var home: String { variables["HOME"] ?? NSHomeDirectory() }
    public var profileName: String { variables["AWS_PROFILE"] ?? variables["AWS_DEFAULT_PROFILE"] ?? "default" }
    var credentialsPath: String { variables["AWS_SHARED_CREDENTIALS_FILE"] ?? home + "/.aws/credentials" }
    var configPath: String { variables["AWS_CONFIG_FILE"] ?? home + "/.aws/config" }

    func file(_ path: String, isConfig: Bool) -> ProfileFile? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return ProfileFile(text: text, isConfig: isConfig)
    }

    /// The named profile merged from both files (the credentials file wins).
    func profile() -> [String: String]? {
        let config = file(configPath, isConfig: true)?.sections[profileName]
        let creds = file(credentialsPath, isConfig: false)?.sections[profileName]
        guard config != nil || creds != nil else { return nil }
        return (config ?? [:]).merging(creds ?? [:]) { _, c in c }
    }

    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, else the profile's `region`.
    public var region: String? {
        variables["AWS_REGION"] ?? variables["AWS_DEFAULT_REGION"] ?? profile()?["region"]
    }

    /// The endpoint for `service` (`kms`, `sts`): `AWS_ENDPOINT_URL_<SERVICE>`, else
    /// `AWS_ENDPOINT_URL`, else AWS's regional endpoint.
    public func endpoint(service: String, region: String) -> String {
        if let name = endpointVariable(service: service), let url = variables[name] { return url }
        let suffix = region.hasPrefix("cn-") ? "amazonaws.com.cn" : "amazonaws.com"
        return "https://\(service).\(region).\(suffix)"
    }

    /// The variable `endpoint(service:region:)` takes the URL from, when one is set.
    public func endpointVariable(service: String) -> String? {
        ["AWS_ENDPOINT_URL_" + service.uppercased(), "AWS_ENDPOINT_URL"].first { variables[$0] != nil }
    }

    /// The first source that applies, in the SDKs' order; an error lists where it looked.
    public func credentialProvider(region: String, http: KMSHTTP, timeout: Duration) throws(KMSError) -> any CredentialProvider {
        if let id = variables["AWS_ACCESS_KEY_ID"] {
            guard let secret = variables["AWS_SECRET_ACCESS_KEY"] else {
                throw KMSError(.credentials, code: nil, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
            }
            return StaticCredentials(AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: variables["AWS_SESSION_TOKEN"]), source: "environment (AWS_ACCESS_KEY_ID)")
        }
        if let tokenFile = variables["AWS_WEB_IDENTITY_TOKEN_FILE"] {
            guard let role = variables["AWS_ROLE_ARN"] else {
                throw KMSError(.credentials, code: nil, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not")
            }
            return try webIdentity(role: role, tokenFile: tokenFile, session: variables["AWS_ROLE_SESSION_NAME"], region: region, http: http, timeout: timeout)
        }
        let explicit = variables["AWS_PROFILE"] ?? variables["AWS_DEFAULT_PROFILE"]
        if let p = profile() {
            let place = "profile \(profileName) in \(credentialsPath) / \(configPath)"
            if let id = p["aws_access_key_id"] {
                guard let secret = p["aws_secret_access_key"] else {
                    throw KMSError(.credentials, code: nil, "\(place) has aws_access_key_id but no aws_secret_access_key")
                }
                return StaticCredentials(AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: p["aws_session_token"]), source: place)
            }
            if let tokenFile = p["web_identity_token_file"], let role = p["role_arn"] {
                return try webIdentity(role: role, tokenFile: tokenFile, session: p["role_session_name"], region: region, http: http, timeout: timeout)
            }
            throw KMSError(.credentials, code: nil, "\(place) holds neither aws_access_key_id nor web_identity_token_file + role_arn (SSO, credential_process and source_profile are not supported yet)")
        }
        if let explicit {
            throw KMSError(.credentials, code: nil, "AWS_PROFILE names profile \(explicit), which is in neither \(credentialsPath) nor \(configPath)")
        }
        throw KMSError(.credentials, code: nil, "no AWS credentials found: set AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, or a profile in \(credentialsPath) (instance metadata and ECS container credentials are not supported yet)")
    }

    /// One provider per role and token file in the process, so every key using it shares one STS session.
    private static let webIdentities = Locked<[String: WebIdentityCredentials]>([:])

    private func webIdentity(role: String, tokenFile: String, session: String?, region: String, http: KMSHTTP, timeout: Duration) throws(KMSError) -> WebIdentityCredentials {
        let endpoint = endpoint(service: "sts", region: region)
        let variable = endpointVariable(service: "sts")
        _ = try Endpoint(endpoint, service: "sts", variable: variable)  // refused now, not at the first refresh
        let name = session ?? "cfsign-\(ProcessInfo.processInfo.processIdentifier)"
        let key = [role, tokenFile, name, endpoint].joined(separator: "\u{0}")
        return Self.webIdentities.withLock { table in
            if let live = table[key] { return live }
            let provider = WebIdentityCredentials(roleARN: role, tokenFile: tokenFile, sessionName: name,
                                                  sts: STSClient(endpoint: endpoint, variable: variable, region: region, http: http, timeout: timeout))
            table[key] = provider
            return provider
        }
    }
}
