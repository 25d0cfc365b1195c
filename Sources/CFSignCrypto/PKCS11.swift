internal import CCFSignPKCS11
import CFSignCore
import CFSignSync
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A PKCS#11 module (the vendor's `.so`), dlopen'ed once and `C_Initialize`d once per process.
///
/// Never finalised or closed: PKCS#11 state (logins, sessions) belongs to the process, and a second
/// `C_Initialize` after `C_Finalize` would log every live key out. Modules are looked up by the
/// resolved path, so two spellings of one library share one initialisation.
final class PKCS11Module: @unchecked Sendable {
    // Immutable after init; the function list is the module's own static table.
    let path: String
    let f: UnsafeMutablePointer<CK_FUNCTION_LIST>
    /// Tokens with live keys, by slot: a second group on the same token shares its login and sessions.
    let tokens = Locked<[CK_SLOT_ID: WeakToken]>([:])
    /// Serialises token discovery and login, which touch process-wide token state.
    let loadLock = Locked<Void>(())

    private static let loaded = Locked<[String: PKCS11Module]>([:])

    private static func resolve(_ path: String) -> String? {
        realpath(path, nil).map { p -> String in defer { free(p) }; return String(cString: p) }
    }

    private init(path: String, f: UnsafeMutablePointer<CK_FUNCTION_LIST>) {
        self.path = path
        self.f = f
    }

    /// The module at `path`, loaded and initialised on first use. `source` names the URI part.
    ///
    /// - Parameter allowed: the module paths this process may load (`pkcs11_modules`), nil for any.
    ///   Compared after resolving symlinks on both sides, before anything is loaded: whoever writes
    ///   the key group chooses `module-path`, and loading a library runs its code in the process
    ///   that holds the keys.
    static func load(path: String, source: String, allowed: [String]? = nil) throws(KeyError) -> PKCS11Module {
        let resolved = resolve(path)
        guard let resolved else {
            throw KeyError(source: source, reason: "cannot be loaded: \(String(cString: strerror(errno)))")
        }
        if let allowed, !allowed.contains(where: { resolve($0) == resolved }) {
            let list = allowed.isEmpty ? "none" : allowed.joined(separator: ", ")
            throw KeyError(source: source, reason: "is not a module this process may load (pkcs11_modules: \(list)); an operator adds it to pkcs11_modules in the worker's configuration")
        }
        let result: Result<PKCS11Module, KeyError> = loaded.withLock { table in
            if let m = table[resolved] { return .success(m) }
            guard let handle = dlopen(resolved, RTLD_NOW | RTLD_LOCAL) else {
                let detail = dlerror().map { String(cString: $0) } ?? "dlopen failed"
                return .failure(KeyError(source: source, reason: "cannot be loaded (\(detail))"))
            }
            guard let symbol = dlsym(handle, "C_GetFunctionList") else {
                dlclose(handle)
                return .failure(KeyError(source: source, reason: "is not a PKCS#11 module (no C_GetFunctionList)"))
            }
            typealias GetFunctionList = @convention(c) (UnsafeMutablePointer<UnsafeMutablePointer<CK_FUNCTION_LIST>?>?) -> CK_RV
            let get = unsafeBitCast(symbol, to: GetFunctionList.self)
            var list: UnsafeMutablePointer<CK_FUNCTION_LIST>? = nil
            let rv = get(&list)
            guard rv == CKR_OK, let list, let initialize = list.pointee.C_Initialize else {
                return .failure(KeyError(source: source, reason: "C_GetFunctionList failed (\(PKCS11.name(rv)))"))
            }
            // The module makes its own locks (CKF_OS_LOCKING_OK): cfsign calls it from many threads.
            var args = CK_C_INITIALIZE_ARGS()
            args.flags = CK_FLAGS(CKF_OS_LOCKING_OK)
            let irv = initialize(&args)
            guard irv == CKR_OK || irv == CKR_CRYPTOKI_ALREADY_INITIALIZED else {
                return .failure(KeyError(source: source, reason: "C_Initialize failed (\(PKCS11.name(irv)))"))
            }
            let module = PKCS11Module(path: resolved, f: list)
            table[resolved] = module
            return .success(module)
        }
        return try result.get()
    }

    /// The slots holding a token that matches `uri`'s token attributes.
    func matchingSlots(_ uri: PKCS11URI) throws(KeyError) -> [(slot: CK_SLOT_ID, info: CK_TOKEN_INFO)] {
        var count: CK_ULONG = 0
        var rv = f.pointee.C_GetSlotList!(CK_BBOOL(CK_TRUE), nil, &count)
        guard rv == CKR_OK else { throw KeyError(source: "module-path \(uri.modulePath)", reason: "C_GetSlotList failed (\(PKCS11.name(rv)))") }
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        rv = f.pointee.C_GetSlotList!(CK_BBOOL(CK_TRUE), &slots, &count)
        guard rv == CKR_OK else { throw KeyError(source: "module-path \(uri.modulePath)", reason: "C_GetSlotList failed (\(PKCS11.name(rv)))") }
        var found: [(CK_SLOT_ID, CK_TOKEN_INFO)] = []
        for slot in slots.prefix(Int(count)) {
            if let wanted = uri.slotID, UInt64(slot) != wanted { continue }
            var info = CK_TOKEN_INFO()
            guard f.pointee.C_GetTokenInfo!(slot, &info) == CKR_OK else { continue }
            if let t = uri.token, PKCS11.padded(info.label) != t { continue }
            if let m = uri.manufacturer, PKCS11.padded(info.manufacturerID) != m { continue }
            if let m = uri.model, PKCS11.padded(info.model) != m { continue }
            if let s = uri.serial, PKCS11.padded(info.serialNumber) != s { continue }
            found.append((slot, info))
        }
        return found
    }
}

/// A registry entry that does not keep a token (and its login) alive on its own.
struct WeakToken {
    weak var token: PKCS11Token?
}

/// One PKCS#11 session, closed when the Swift object goes.
final class PKCS11Session: @unchecked Sendable {
    // Used by one thread at a time: the pool hands a session to one caller until it is returned.
    let handle: CK_SESSION_HANDLE
    private let module: PKCS11Module

    init(module: PKCS11Module, slot: CK_SLOT_ID) throws(PKCS11Error) {
        var handle: CK_SESSION_HANDLE = 0
        let rv = module.f.pointee.C_OpenSession!(slot, CK_FLAGS(CKF_SERIAL_SESSION), nil, nil, &handle)
        guard rv == CKR_OK else { throw PKCS11Error(rv: rv, call: "C_OpenSession") }
        self.handle = handle
        self.module = module
    }

    deinit { _ = module.f.pointee.C_CloseSession!(handle) }
}

/// A failed PKCS#11 call: the return value and the function, for messages and for deciding
/// whether the token (not the request) is at fault.
struct PKCS11Error: Error {
    let rv: CK_RV
    let call: String
    var description: String { "\(call) returned \(PKCS11.name(rv))" }

    /// True when the session or token is gone (removed, logged out, closed): retry later, with a
    /// new session and, if needed, a new login.
    var tokenUnavailable: Bool {
        [CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR,
         CKR_DEVICE_MEMORY, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED, CKR_USER_NOT_LOGGED_IN,
         CKR_SESSION_COUNT, CKR_FUNCTION_FAILED, CKR_GENERAL_ERROR, CKR_CRYPTOKI_NOT_INITIALIZED,
         CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID].contains(rv)
    }
}

/// An HSM token with keys of loaded groups on it: its login (process-wide, per PKCS#11) and a pool
/// of sessions that signing threads borrow one at a time.
///
/// Freed when the last key on it goes (its group was rotated out); closing the last session logs
/// the token out, so a later group may log in with another PIN.
final class PKCS11Token: @unchecked Sendable {
    // `module`, `slot`, `label` are immutable; everything else is under `state`'s condition.
    let module: PKCS11Module
    let slot: CK_SLOT_ID
    let label: String
    private let condition = NSCondition()
    private var idle: [PKCS11Session] = []
    private var open = 0
    /// At most this many sessions: the token's own maximum, lowered when it answers CKR_SESSION_COUNT.
    private var cap: Int
    /// The PIN this process is logged in with (wiped on deinit); nil before the first login.
    private var pin: [UInt8]?

    init(module: PKCS11Module, slot: CK_SLOT_ID, info: CK_TOKEN_INFO, maxSessions: Int? = nil) {
        self.module = module
        self.slot = slot
        self.label = PKCS11.padded(info.label)
        let advertised = info.ulMaxSessionCount
        var cap = (advertised == CK_EFFECTIVELY_INFINITE || advertised == PKCS11.unavailable) ? Int.max : Int(advertised)
        if let maxSessions { cap = min(cap, maxSessions) }
        self.cap = max(1, cap)
    }

    deinit {
        if var pin { pin.wipe() }
        idle.removeAll()  // closes them; the last one closed logs the token out
    }

    /// The number of sessions open now (for tests of the pool).
    var openSessions: Int {
        condition.lock(); defer { condition.unlock() }
        return open
    }

    /// Runs `body` with a session no other thread uses meanwhile. A session that failed because the
    /// token went away is closed instead of returned.
    func withSession<T>(_ body: (PKCS11Session) throws(PKCS11Error) -> T) throws(PKCS11Error) -> T {
        let session = try acquire()
        do {
            let value = try body(session)
            release(session, broken: false)
            return value
        } catch {
            release(session, broken: error.tokenUnavailable)
            throw error
        }
    }

    private func acquire() throws(PKCS11Error) -> PKCS11Session {
        condition.lock()
        while true {
            if let s = idle.popLast() {
                condition.unlock()
                return s
            }
            if open < cap {
                open += 1
                condition.unlock()
                do {
                    return try PKCS11Session(module: module, slot: slot)
                } catch {
                    condition.lock()
                    open -= 1
                    guard error.rv == CKR_SESSION_COUNT, open > 0 else {
                        condition.unlock()
                        throw error
                    }
                    // The module allows fewer sessions than it said (or than we have threads):
                    // remember its real limit and wait for a session to come back.
                    cap = open
                    continue
                }
            }
            condition.wait()
        }
    }

    private func release(_ session: PKCS11Session, broken: Bool) {
        condition.lock()
        if broken {
            open -= 1
        } else {
            idle.append(session)
        }
        condition.signal()
        condition.unlock()
        // A broken session is closed here, outside the lock, when `session` goes.
    }

    /// Logs in with `pin` for a new group version, or checks that the live login used the same PIN.
    ///
    /// PKCS#11 login state is per token for the whole process: SoftHSM answers
    /// CKR_USER_ALREADY_LOGGED_IN to a second C_Login before it looks at the PIN, so "already
    /// logged in" cannot be taken as success for a PIN nobody checked.
    func login(pin newPIN: [UInt8], pinSource: String) throws(KeyError) {
        condition.lock()
        let current = pin
        condition.unlock()
        let rv: CK_RV
        do throws(PKCS11Error) {
            rv = try withSession { s throws(PKCS11Error) in
                var bytes = newPIN
                defer { bytes.wipe() }
                return module.f.pointee.C_Login!(s.handle, CK_USER_TYPE(CKU_USER), &bytes, CK_ULONG(bytes.count))
            }
        } catch {
            throw KeyError(source: "token=\(label)", reason: "cannot open a session (\(error.description))")
        }
        switch rv {
        case CKR_OK:
            break
        case CKR_USER_ALREADY_LOGGED_IN:
            guard let current else {
                // Logged in by a token object that is going away; its sessions close with it.
                // Log out and in again so this PIN is the one checked.
                do throws(PKCS11Error) {
                    let again = try withSession { s throws(PKCS11Error) in
                        _ = module.f.pointee.C_Logout!(s.handle)
                        var bytes = newPIN
                        defer { bytes.wipe() }
                        return module.f.pointee.C_Login!(s.handle, CK_USER_TYPE(CKU_USER), &bytes, CK_ULONG(bytes.count))
                    }
                    guard again == CKR_OK else { throw PKCS11Error(rv: again, call: "C_Login") }
                } catch {
                    throw Self.loginError(error.rv, token: label, pinSource: pinSource)
                }
                break
            }
            guard current.count == newPIN.count, zip(current, newPIN).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
                throw KeyError(source: pinSource, reason: "gives a different PIN from the one token \"\(label)\" is logged in with by the key group in use; PKCS#11 logs a token in once per process, so change the PIN in two steps (a group without this token first) or restart the worker")
            }
        default:
            throw Self.loginError(rv, token: label, pinSource: pinSource)
        }
        condition.lock()
        if var old = pin { old.wipe() }
        pin = newPIN
        condition.unlock()
    }

    /// Refuses `newPIN` when it is not the PIN this process logged in with (a second key of one
    /// group on the same token, with another pin-source).
    func checkSamePIN(_ newPIN: [UInt8], pinSource: String) throws(KeyError) {
        condition.lock()
        let current = pin
        condition.unlock()
        guard let current else { return }
        guard current.count == newPIN.count, zip(current, newPIN).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            throw KeyError(source: pinSource, reason: "gives a different PIN from another key of this group on token \"\(label)\"; one token has one user PIN")
        }
    }

    private static func loginError(_ rv: CK_RV, token: String, pinSource: String) -> KeyError {
        switch rv {
        case CKR_PIN_INCORRECT:
            return KeyError(source: pinSource, reason: "is not the user PIN of token \"\(token)\" (CKR_PIN_INCORRECT)")
        case CKR_PIN_LOCKED:
            return KeyError(source: pinSource, reason: "cannot log in: the user PIN of token \"\(token)\" is locked (CKR_PIN_LOCKED)")
        default:
            return KeyError(source: "token=\(token)", reason: "C_Login failed (\(PKCS11.name(rv)))")
        }
    }

    /// C_CloseAllSessions: what a token does when it is reset or pulled; the login goes with the
    /// sessions. Only tests call it, to check that signing recovers.
    func closeAllSessions() {
        _ = module.f.pointee.C_CloseAllSessions!(slot)
    }

    /// Logs in again with the PIN of the last successful login (after the token came back).
    func relogin() {
        condition.lock()
        let current = pin
        condition.unlock()
        guard let current else { return }
        _ = try? withSession { s throws(PKCS11Error) in
            var bytes = current
            defer { bytes.wipe() }
            _ = module.f.pointee.C_Login!(s.handle, CK_USER_TYPE(CKU_USER), &bytes, CK_ULONG(bytes.count))
        }
    }
}

/// Small helpers over the C API.
enum PKCS11 {
    /// CK_UNAVAILABLE_INFORMATION (`(unsigned long)-1`, a macro Swift does not import).
    static let unavailable = CK_ULONG.max

    /// A blank-padded fixed-size CK_UTF8CHAR field as a String, trailing blanks removed.
    static func padded<T>(_ field: T) -> String {
        withUnsafeBytes(of: field) { raw in
            var bytes = Array(raw)
            while let last = bytes.last, last == 0x20 || last == 0 { bytes.removeLast() }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// One attribute's bytes, or nil when the object does not have it.
    static func attribute(_ module: PKCS11Module, _ session: PKCS11Session, _ object: CK_OBJECT_HANDLE, _ type: CK_ATTRIBUTE_TYPE) -> [UInt8]? {
        var template = CK_ATTRIBUTE(type: type, pValue: nil, ulValueLen: 0)
        guard module.f.pointee.C_GetAttributeValue!(session.handle, object, &template, 1) == CKR_OK,
              template.ulValueLen != unavailable else { return nil }
        var value = [UInt8](repeating: 0, count: Int(template.ulValueLen))
        let rv = value.withUnsafeMutableBytes { raw -> CK_RV in
            template.pValue = raw.baseAddress
            return module.f.pointee.C_GetAttributeValue!(session.handle, object, &template, 1)
        }
        guard rv == CKR_OK else { return nil }
        return Array(value.prefix(Int(template.ulValueLen)))
    }

    static func ulong(_ bytes: [UInt8]?) -> CK_ULONG? {
        guard let bytes, bytes.count == MemoryLayout<CK_ULONG>.size else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: CK_ULONG.self) }
    }

    /// Up to `limit` objects matching class `objectClass` plus a label and/or an id.
    static func find(_ module: PKCS11Module, _ session: PKCS11Session, class objectClass: CK_OBJECT_CLASS,
                     label: String?, id: [UInt8]?, limit: Int = 2) throws(PKCS11Error) -> [CK_OBJECT_HANDLE] {
        var cls = objectClass
        var labelBytes = Array((label ?? "").utf8)
        var idBytes = id ?? []
        let f = module.f.pointee
        let rv: CK_RV = withUnsafeMutableBytes(of: &cls) { clsRaw in
            labelBytes.withUnsafeMutableBytes { labelRaw in
                idBytes.withUnsafeMutableBytes { idRaw in
                    var template = [CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(CKA_CLASS), pValue: clsRaw.baseAddress, ulValueLen: CK_ULONG(clsRaw.count))]
                    if label != nil { template.append(CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(CKA_LABEL), pValue: labelRaw.baseAddress, ulValueLen: CK_ULONG(labelRaw.count))) }
                    if id != nil { template.append(CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(CKA_ID), pValue: idRaw.baseAddress, ulValueLen: CK_ULONG(idRaw.count))) }
                    return f.C_FindObjectsInit!(session.handle, &template, CK_ULONG(template.count))
                }
            }
        }
        guard rv == CKR_OK else { throw PKCS11Error(rv: rv, call: "C_FindObjectsInit") }
        defer { _ = f.C_FindObjectsFinal!(session.handle) }
        var objects = [CK_OBJECT_HANDLE](repeating: 0, count: limit)
        var count: CK_ULONG = 0
        let frv = f.C_FindObjects!(session.handle, &objects, CK_ULONG(limit), &count)
        guard frv == CKR_OK else { throw PKCS11Error(rv: frv, call: "C_FindObjects") }
        return Array(objects.prefix(Int(count)))
    }

    /// The CKR_ name of a return value, for messages.
    static func name(_ rv: CK_RV) -> String {
        let names: [CK_RV: String] = [
            CKR_OK: "CKR_OK", CKR_CANCEL: "CKR_CANCEL", CKR_HOST_MEMORY: "CKR_HOST_MEMORY",
            CKR_SLOT_ID_INVALID: "CKR_SLOT_ID_INVALID", CKR_GENERAL_ERROR: "CKR_GENERAL_ERROR",
            CKR_FUNCTION_FAILED: "CKR_FUNCTION_FAILED", CKR_ARGUMENTS_BAD: "CKR_ARGUMENTS_BAD",
            CKR_DEVICE_ERROR: "CKR_DEVICE_ERROR", CKR_DEVICE_MEMORY: "CKR_DEVICE_MEMORY",
            CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED", CKR_KEY_HANDLE_INVALID: "CKR_KEY_HANDLE_INVALID",
            CKR_KEY_TYPE_INCONSISTENT: "CKR_KEY_TYPE_INCONSISTENT", CKR_MECHANISM_INVALID: "CKR_MECHANISM_INVALID",
            CKR_OBJECT_HANDLE_INVALID: "CKR_OBJECT_HANDLE_INVALID", CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT",
            CKR_PIN_LOCKED: "CKR_PIN_LOCKED", CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED",
            CKR_SESSION_COUNT: "CKR_SESSION_COUNT", CKR_SESSION_HANDLE_INVALID: "CKR_SESSION_HANDLE_INVALID",
            CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_RECOGNIZED: "CKR_TOKEN_NOT_RECOGNIZED",
            CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN", CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN",
            CKR_USER_PIN_NOT_INITIALIZED: "CKR_USER_PIN_NOT_INITIALIZED", CKR_BUFFER_TOO_SMALL: "CKR_BUFFER_TOO_SMALL",
            CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED",
            CKR_CRYPTOKI_ALREADY_INITIALIZED: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
            CKR_OPERATION_ACTIVE: "CKR_OPERATION_ACTIVE", CKR_DATA_LEN_RANGE: "CKR_DATA_LEN_RANGE",
        ]
        return names[rv] ?? "CKR 0x\(String(rv, radix: 16))"
    }
}
