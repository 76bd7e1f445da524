// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";

/// @notice What the DisputeCourt needs from the JobMarket.
interface IDisputableMarket {
    /// @dev Same fields and order as `JobMarket.ResultReceipt`, so the ABI encoding is the same.
    struct ResultReceipt {
        bytes32 jobId;
        bytes32 modelId;
        bytes32 inputHash;
        bytes32 outputHash;
        bytes32 profileHash;
        address provider;
    }

    function receiptDigest(ResultReceipt calldata receipt) external view returns (bytes32);
    /// @dev `verdict` as `DisputeCourt.Verdict`: Pending holds the job, any other ends the hold.
    function challengeHold(bytes32 jobId, address provider, uint8 verdict) external returns (bool escrowed);
    function lastRedeemedAt(address provider) external view returns (uint256);
}

/// @title DisputeCourt
/// @notice Decides whether a provider's signed result was wrong, with a jury of staked providers.
/// The chain cannot run a model, so it decides only what it can check: a signed receipt, a bond,
/// times, and a majority of staked votes. Re-execution happens off-chain:
///  1. `openDispute`: a challenger posts `bond` with the provider's signed `ResultReceipt`, for an
///     on-chain job within its challenge window (the market holds it: it is not finalized until the
///     dispute ends), or for a voucher-paid job within `voucherDisputeWindow` of the provider's last
///     redemption. One dispute per job and provider, ever. The input and the claimed output are
///     fetched by their sha256 from the challenger's peer (`evidencePeer`), or from the chain's
///     `JobInput`/`ResultOutput` logs.
///  2. `drawJury`: after `DRAW_DELAY_BLOCKS`, anyone draws up to `JURY_SIZE` jurors from the hash of
///     a block that did not exist when the challenge was made, weighted by stake (the registry's
///     tree, O(log n) per draw), never the provider nor the challenger, never twice.
///  3. `commitVote` then `revealVote`: each juror re-runs the job under the receipt's profile and
///     commits to (acceptable, its own output hash, salt), bound to the dispute and the juror; the
///     reveal opens once every juror committed or the commit period ended.
///  4. `resolve`: with at least `QUORUM` reveals, the strict majority of "acceptable" decides.
///     Provider wrong: it loses `slashAmount` of stake (half burned, the rest 60% to the challenger
///     with its bond back, 40% to the majority jurors) and an escrowed job's price goes back to its
///     requester. Provider right: the challenger's bond is shared the same way (60% to the
///     provider). Undecided: the bond goes back. A juror that did not reveal loses
///     `bond * NO_REVEAL_PENALTY_BPS / BPS` of stake, paid to the jurors who did their work.
/// Payments are credited and taken out with `withdraw`. The parties' and jurors' stakes cannot
/// leave the registry while a dispute they are part of is open.
/// @dev Numbers here are mirrored by `node.domain.disputes`; a test reads them back.
/// Section order: types, events, errors, constants/immutables, storage, constructor, modifiers,
/// external functions, views, internal functions.
contract DisputeCourt {
    // ------------------------------------------------------------------ types

    enum Verdict {
        Pending,
        ProviderWrong,
        ProviderRight,
        Undecided
    }

    /// @dev Two slots of parties and times, then the job id.
    struct Dispute {
        address provider;
        uint64 drawBlock;
        bool escrowed;
        Verdict verdict;
        address challenger;
        uint40 commitDeadline;
        uint40 revealDeadline;
        uint8 jurorCount;
        uint8 commits;
        uint8 reveals;
        uint8 accepting;
        bytes32 jobId;
    }

    struct Ballot {
        bool drawn;
        bool revealed;
        bool acceptable;
        bytes32 commitment;
        bytes32 outputHash;
    }

    // ------------------------------------------------------------------ events

    /// @dev Carries every field of the disputed receipt, so jurors need nothing else from the chain.
    event DisputeOpened(
        bytes32 indexed disputeId,
        bytes32 indexed jobId,
        address indexed provider,
        address challenger,
        bytes32 modelId,
        bytes32 inputHash,
        bytes32 outputHash,
        bytes32 profileHash,
        bool escrowed,
        uint256 drawBlock,
        bytes evidencePeer
    );
    event DrawDelayed(bytes32 indexed disputeId, uint256 drawBlock);
    event JurorDrawn(bytes32 indexed disputeId, address indexed juror);
    event JuryDrawn(bytes32 indexed disputeId, uint256 jurors, uint256 commitDeadline, uint256 revealDeadline);
    event VoteCommitted(bytes32 indexed disputeId, address indexed juror);
    event VoteRevealed(bytes32 indexed disputeId, address indexed juror, bool acceptable, bytes32 outputHash);
    event JurorPenalized(bytes32 indexed disputeId, address indexed juror, uint256 slashed);
    event DisputeResolved(bytes32 indexed disputeId, Verdict verdict, uint256 providerSlashed, uint256 jurorPay);
    event Credited(bytes32 indexed disputeId, address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    // ------------------------------------------------------------------ errors

    error ZeroAddress();
    error InvalidPeriod(uint256 period);
    error InvalidBond(uint256 bond);
    error WrongBond(uint256 sent, uint256 bond);
    error InvalidSignature();
    error WrongSigner(address signer, address expected);
    error SelfChallenge(address provider);
    error InvalidEvidencePeer(uint256 length);
    error AlreadyDisputed(bytes32 disputeId);
    error ChallengeTooLate(bytes32 jobId, uint256 lockedUntil);
    error DisputeNotFound(bytes32 disputeId);
    error JuryAlreadyDrawn(bytes32 disputeId);
    error DrawTooEarly(bytes32 disputeId, uint256 drawBlock);
    error JuryNotDrawn(bytes32 disputeId);
    error NotJuror(bytes32 disputeId, address caller);
    error AlreadyResolved(bytes32 disputeId);
    error AlreadyCommitted(bytes32 disputeId, address juror);
    error CommitClosed(bytes32 disputeId, uint256 commitDeadline);
    error RevealNotOpen(bytes32 disputeId, uint256 commitDeadline);
    error RevealClosed(bytes32 disputeId, uint256 revealDeadline);
    error NotCommitted(bytes32 disputeId, address juror);
    error AlreadyRevealed(bytes32 disputeId, address juror);
    error CommitmentMismatch(bytes32 disputeId, address juror);
    error RevealStillOpen(bytes32 disputeId, uint256 revealDeadline);
    error NotRegistry(address caller);
    error NothingToWithdraw(address account);
    error TransferFailed(address to, uint256 amount);
    error Reentrancy();

    // ------------------------------------------------------------------ constants and immutables

    uint256 public constant BPS = 10_000;
    uint256 public constant JURY_SIZE = 5;
    uint256 public constant QUORUM = JURY_SIZE / 2 + 1;
    uint256 public constant DRAW_DELAY_BLOCKS = 2;
    uint256 public constant MAX_DRAW_ATTEMPTS = 32;
    /// @notice Of a forfeited bond, the share paid out (the rest is burned); the registry pays the
    /// same share of a slashed stake here.
    uint256 public constant SLASH_REWARD_BPS = 5_000;
    /// @notice Of what a forfeit pays out, the share of the majority jurors; the rest is the winner's.
    uint256 public constant JURY_SHARE_BPS = 4_000;
    /// @notice Stake a juror that does not reveal loses, as a share of the bond.
    uint256 public constant NO_REVEAL_PENALTY_BPS = 5_000;
    uint256 public constant MAX_EVIDENCE_PEER_LENGTH = 64;
    uint256 public constant MIN_PERIOD = 1 minutes;
    uint256 public constant MAX_PERIOD = 30 days;
    /// @dev secp256k1n / 2: signatures with a larger s are malleable copies and are rejected.
    uint256 private constant HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    IProviderRegistry public immutable registry;
    IDisputableMarket public immutable market;
    /// @notice Wei a challenger posts to open a dispute.
    uint256 public immutable bond;
    /// @notice Stake a provider found wrong loses (capped at its stake): the registry's minimum stake.
    uint256 public immutable slashAmount;
    /// @notice Seconds jurors have to commit after the draw, then to reveal.
    uint256 public immutable commitPeriod;
    uint256 public immutable revealPeriod;
    /// @notice Seconds after a provider's last voucher redemption during which its voucher-paid jobs
    /// can be disputed (and its stake cannot leave).
    uint256 public immutable voucherDisputeWindow;

    // ------------------------------------------------------------------ storage

    mapping(bytes32 disputeId => Dispute) private _disputes;
    mapping(bytes32 disputeId => address[] jurors) private _jurors;
    mapping(bytes32 disputeId => mapping(address juror => Ballot)) private _ballots;
    /// @notice Wei each account can take out with `withdraw`: bonds back, rewards, juror pay.
    mapping(address account => uint256 amount) public withdrawable;
    /// @notice Forfeited bonds and rounding dust nobody may take, locked here for good.
    uint256 public burned;
    bool private transient _locked;

    // ------------------------------------------------------------------ constructor

    /// @param registry_ The ProviderRegistry (its deployer names this court with `setCourt`).
    /// @param market_ The JobMarket whose receipts and jobs are disputed.
    /// @param bond_ Wei a challenger posts; positive, below 2^128.
    /// @param commitPeriod_ Seconds to commit after the draw; 1 minute to 30 days.
    /// @param revealPeriod_ Seconds to reveal after the commit period; 1 minute to 30 days.
    /// @param voucherDisputeWindow_ Seconds after a redemption its jobs stay disputable; 1 minute to 30 days.
    constructor(
        IProviderRegistry registry_,
        IDisputableMarket market_,
        uint256 bond_,
        uint256 commitPeriod_,
        uint256 revealPeriod_,
        uint256 voucherDisputeWindow_
    ) {
        if (address(registry_) == address(0) || address(market_) == address(0)) revert ZeroAddress();
        if (bond_ == 0 || bond_ > type(uint128).max) revert InvalidBond(bond_);
        _checkPeriod(commitPeriod_);
        _checkPeriod(revealPeriod_);
        _checkPeriod(voucherDisputeWindow_);
        registry = registry_;
        market = market_;
        bond = bond_;
        slashAmount = registry_.minStake();
        commitPeriod = commitPeriod_;
        revealPeriod = revealPeriod_;
        voucherDisputeWindow = voucherDisputeWindow_;
    }

    // ------------------------------------------------------------------ modifiers

    modifier nonReentrant() {
        if (_locked) revert Reentrancy();
        _locked = true;
        _;
        _locked = false;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Accepts the reward share of stakes the registry slashes for this court.
    receive() external payable {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
    }

    /// @notice Disputes a provider's signed result, posting `bond` as `msg.value`.
    /// @param receipt The provider's `ResultReceipt` (as in `JobMarket`).
    /// @param signature The provider's EIP-712 signature over it.
    /// @param evidencePeer The libp2p peer id jurors fetch the input and claimed output from, by sha256
    /// (`/gpunode/blob/1`); may be empty for on-chain jobs whose input and output are in logs.
    /// @return disputeId `keccak256(abi.encode(jobId, provider))`.
    function openDispute(
        IDisputableMarket.ResultReceipt calldata receipt,
        bytes calldata signature,
        bytes calldata evidencePeer
    ) external payable nonReentrant returns (bytes32 disputeId) {
        if (msg.value != bond) revert WrongBond(msg.value, bond);
        if (evidencePeer.length > MAX_EVIDENCE_PEER_LENGTH) revert InvalidEvidencePeer(evidencePeer.length);
        address provider = receipt.provider;
        address signer = _recover(market.receiptDigest(receipt), signature);
        if (signer == address(0)) revert InvalidSignature();
        if (signer != provider) revert WrongSigner(signer, provider);
        if (msg.sender == provider) revert SelfChallenge(provider);
        disputeId = disputeIdOf(receipt.jobId, provider);
        if (_disputes[disputeId].provider != address(0)) revert AlreadyDisputed(disputeId);
        bool escrowed = market.challengeHold(receipt.jobId, provider, uint8(Verdict.Pending));
        if (!escrowed) {
            uint256 until = voucherLockUntil(provider);
            if (block.timestamp > until) revert ChallengeTooLate(receipt.jobId, until);
        }
        uint256 drawBlock = block.number + DRAW_DELAY_BLOCKS;
        Dispute storage dispute = _disputes[disputeId];
        dispute.provider = provider;
        dispute.challenger = msg.sender;
        dispute.drawBlock = uint64(drawBlock);
        dispute.escrowed = escrowed;
        dispute.jobId = receipt.jobId;
        registry.lockStake(provider);
        emit DisputeOpened(
            disputeId,
            receipt.jobId,
            provider,
            msg.sender,
            receipt.modelId,
            receipt.inputHash,
            receipt.outputHash,
            receipt.profileHash,
            escrowed,
            drawBlock,
            evidencePeer
        );
    }

    /// @notice Draws the jury from the hash of the dispute's draw block, which did not exist when the
    /// challenge was made. Anyone may call it once that block is mined; if it is older than the 256
    /// blocks the chain remembers, the draw moves to a new future block instead.
    /// @param disputeId The dispute.
    function drawJury(bytes32 disputeId) external nonReentrant {
        Dispute storage dispute = _open(disputeId);
        if (dispute.commitDeadline != 0) revert JuryAlreadyDrawn(disputeId);
        uint256 drawBlock = dispute.drawBlock;
        if (block.number <= drawBlock) revert DrawTooEarly(disputeId, drawBlock);
        bytes32 seed = blockhash(drawBlock);
        if (seed == bytes32(0)) {
            drawBlock = block.number + DRAW_DELAY_BLOCKS;
            dispute.drawBlock = uint64(drawBlock);
            emit DrawDelayed(disputeId, drawBlock);
            return;
        }
        uint256 count = _drawJurors(disputeId, dispute, seed);
        uint256 commitDeadline = block.timestamp + commitPeriod;
        uint256 revealDeadline = commitDeadline + revealPeriod;
        dispute.jurorCount = uint8(count);
        dispute.commitDeadline = uint40(commitDeadline);
        dispute.revealDeadline = uint40(revealDeadline);
        emit JuryDrawn(disputeId, count, commitDeadline, revealDeadline);
    }

    /// @notice Commits the caller's vote: `voteCommitment(disputeId, caller, acceptable, outputHash, salt)`.
    /// @param disputeId The dispute.
    /// @param commitment The commitment.
    function commitVote(bytes32 disputeId, bytes32 commitment) external {
        Dispute storage dispute = _open(disputeId);
        Ballot storage ballot = _ballots[disputeId][msg.sender];
        if (!ballot.drawn) revert NotJuror(disputeId, msg.sender);
        if (ballot.commitment != bytes32(0)) revert AlreadyCommitted(disputeId, msg.sender);
        if (block.timestamp > dispute.commitDeadline) revert CommitClosed(disputeId, dispute.commitDeadline);
        ballot.commitment = commitment;
        dispute.commits += 1;
        emit VoteCommitted(disputeId, msg.sender);
    }

    /// @notice Reveals the caller's committed vote, once every juror committed or the commit period
    /// ended, until the reveal deadline.
    /// @param disputeId The dispute.
    /// @param acceptable Whether the provider's output is acceptable: bit-exact under the receipt's
    /// profile, or within the model's tolerance when the juror ran under another profile.
    /// @param outputHash sha256 of the juror's own output.
    /// @param salt The secret the commitment was made with.
    function revealVote(bytes32 disputeId, bool acceptable, bytes32 outputHash, bytes32 salt) external {
        Dispute storage dispute = _open(disputeId);
        Ballot storage ballot = _ballots[disputeId][msg.sender];
        if (!ballot.drawn) revert NotJuror(disputeId, msg.sender);
        if (!_revealOpen(dispute)) revert RevealNotOpen(disputeId, dispute.commitDeadline);
        if (block.timestamp > dispute.revealDeadline) revert RevealClosed(disputeId, dispute.revealDeadline);
        if (ballot.commitment == bytes32(0)) revert NotCommitted(disputeId, msg.sender);
        if (ballot.revealed) revert AlreadyRevealed(disputeId, msg.sender);
        if (voteCommitment(disputeId, msg.sender, acceptable, outputHash, salt) != ballot.commitment) {
            revert CommitmentMismatch(disputeId, msg.sender);
        }
        ballot.revealed = true;
        ballot.acceptable = acceptable;
        ballot.outputHash = outputHash;
        dispute.reveals += 1;
        if (acceptable) dispute.accepting += 1;
        emit VoteRevealed(disputeId, msg.sender, acceptable, outputHash);
    }

    /// @notice Tallies the votes once every juror revealed or the reveal period ended, and settles:
    /// slashes, credits and releases the held job and the locked stakes. Anyone may call it.
    /// @param disputeId The dispute.
    function resolve(bytes32 disputeId) external nonReentrant {
        Dispute storage dispute = _open(disputeId);
        if (dispute.commitDeadline == 0) revert JuryNotDrawn(disputeId);
        if (dispute.reveals < dispute.jurorCount && block.timestamp <= dispute.revealDeadline) {
            revert RevealStillOpen(disputeId, dispute.revealDeadline);
        }
        Verdict verdict = _tally(dispute);
        dispute.verdict = verdict;
        address provider = dispute.provider;
        registry.unlockStake(provider);
        uint256 pot = _penalizeSilentJurors(disputeId);
        uint256 slashed = 0;
        if (verdict == Verdict.ProviderWrong) {
            uint256 reward;
            (slashed, reward) = registry.slash(provider, slashAmount);
            uint256 jury = reward * JURY_SHARE_BPS / BPS;
            pot += jury;
            _credit(disputeId, dispute.challenger, bond + reward - jury);
        } else if (verdict == Verdict.ProviderRight) {
            uint256 reward = bond * SLASH_REWARD_BPS / BPS;
            uint256 jury = reward * JURY_SHARE_BPS / BPS;
            burned += bond - reward;
            pot += jury;
            _credit(disputeId, provider, reward - jury);
        } else {
            _credit(disputeId, dispute.challenger, bond);
        }
        uint256 pay = _payJurors(disputeId, verdict, pot);
        if (dispute.escrowed) market.challengeHold(dispute.jobId, provider, uint8(verdict));
        emit DisputeResolved(disputeId, verdict, slashed, pay);
    }

    /// @notice Pays out everything credited to the caller.
    function withdraw() external nonReentrant {
        uint256 amount = withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        withdrawable[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice A dispute's parties, times, tallies and verdict.
    function disputeOf(bytes32 disputeId)
        external
        view
        returns (
            bytes32 jobId,
            address provider,
            address challenger,
            bool escrowed,
            Verdict verdict,
            uint256 drawBlock,
            uint256 commitDeadline,
            uint256 revealDeadline,
            uint256 jurorCount,
            uint256 commits,
            uint256 reveals,
            uint256 accepting
        )
    {
        Dispute storage d = _disputes[disputeId];
        return (
            d.jobId,
            d.provider,
            d.challenger,
            d.escrowed,
            d.verdict,
            d.drawBlock,
            d.commitDeadline,
            d.revealDeadline,
            d.jurorCount,
            d.commits,
            d.reveals,
            d.accepting
        );
    }

    /// @notice The jurors drawn for a dispute, in draw order (at most `JURY_SIZE`).
    function jurors(bytes32 disputeId) external view returns (address[] memory) {
        return _jurors[disputeId];
    }

    /// @notice One juror's ballot.
    function ballotOf(bytes32 disputeId, address juror)
        external
        view
        returns (bool drawn, bool committed, bool revealed, bool acceptable, bytes32 outputHash)
    {
        Ballot storage b = _ballots[disputeId][juror];
        return (b.drawn, b.commitment != bytes32(0), b.revealed, b.acceptable, b.outputHash);
    }

    /// @notice Until when `provider`'s voucher-paid jobs can be disputed (and its stake must stay):
    /// `voucherDisputeWindow` after its last paying redemption, zero if it never redeemed.
    function voucherLockUntil(address provider) public view returns (uint256) {
        uint256 last = market.lastRedeemedAt(provider);
        return last == 0 ? 0 : last + voucherDisputeWindow;
    }

    /// @notice The id of the dispute over `provider`'s result for `jobId`.
    function disputeIdOf(bytes32 jobId, address provider) public pure returns (bytes32) {
        return keccak256(abi.encode(jobId, provider));
    }

    /// @notice What `juror` commits to: bound to the dispute and the juror, so nobody can copy it.
    function voteCommitment(bytes32 disputeId, address juror, bool acceptable, bytes32 outputHash, bytes32 salt)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(disputeId, juror, acceptable, outputHash, salt));
    }

    // ------------------------------------------------------------------ internal functions

    function _open(bytes32 disputeId) private view returns (Dispute storage dispute) {
        dispute = _disputes[disputeId];
        if (dispute.provider == address(0)) revert DisputeNotFound(disputeId);
        if (dispute.verdict != Verdict.Pending) revert AlreadyResolved(disputeId);
    }

    function _drawJurors(bytes32 disputeId, Dispute storage dispute, bytes32 seed) private returns (uint256 count) {
        address[] storage drawn = _jurors[disputeId];
        uint256 total = registry.totalWeight();
        for (uint256 attempt = 0; attempt < MAX_DRAW_ATTEMPTS && count < JURY_SIZE && total != 0; ++attempt) {
            uint256 point = uint256(keccak256(abi.encode(seed, disputeId, attempt))) % total;
            address juror = registry.drawProvider(point);
            if (juror == dispute.provider || juror == dispute.challenger) continue;
            Ballot storage b = _ballots[disputeId][juror];
            if (b.drawn) continue;
            b.drawn = true;
            drawn.push(juror);
            registry.lockStake(juror);
            emit JurorDrawn(disputeId, juror);
            ++count;
        }
    }

    function _revealOpen(Dispute storage dispute) private view returns (bool) {
        return dispute.commits == dispute.jurorCount || block.timestamp > dispute.commitDeadline;
    }

    function _tally(Dispute storage dispute) private view returns (Verdict) {
        uint256 reveals = dispute.reveals;
        if (reveals < QUORUM) return Verdict.Undecided;
        uint256 accepting = dispute.accepting;
        uint256 rejecting = reveals - accepting;
        if (rejecting > accepting) return Verdict.ProviderWrong;
        if (accepting > rejecting) return Verdict.ProviderRight;
        return Verdict.Undecided;
    }

    /// @dev Slashes every juror that did not reveal and releases every juror's stake; returns the
    /// reward share the registry sent for them.
    function _penalizeSilentJurors(bytes32 disputeId) private returns (uint256 pot) {
        address[] storage drawn = _jurors[disputeId];
        uint256 penalty = bond * NO_REVEAL_PENALTY_BPS / BPS;
        for (uint256 i = 0; i < drawn.length; ++i) {
            address juror = drawn[i];
            registry.unlockStake(juror);
            if (_ballots[disputeId][juror].revealed) continue;
            (uint256 slashed, uint256 reward) = registry.slash(juror, penalty);
            pot += reward;
            emit JurorPenalized(disputeId, juror, slashed);
        }
    }

    /// @dev Shares `pot` equally among the jurors who voted with the majority (every juror who
    /// revealed, when undecided); rounding dust is burned. Returns each one's pay.
    function _payJurors(bytes32 disputeId, Verdict verdict, uint256 pot) private returns (uint256 share) {
        address[] storage drawn = _jurors[disputeId];
        uint256 earners = 0;
        for (uint256 i = 0; i < drawn.length; ++i) {
            if (_earns(_ballots[disputeId][drawn[i]], verdict)) ++earners;
        }
        if (earners == 0) {
            burned += pot;
            return 0;
        }
        share = pot / earners;
        burned += pot - share * earners;
        for (uint256 i = 0; i < drawn.length; ++i) {
            if (_earns(_ballots[disputeId][drawn[i]], verdict)) _credit(disputeId, drawn[i], share);
        }
    }

    function _earns(Ballot storage ballot_, Verdict verdict) private view returns (bool) {
        if (!ballot_.revealed) return false;
        if (verdict == Verdict.ProviderWrong) return !ballot_.acceptable;
        if (verdict == Verdict.ProviderRight) return ballot_.acceptable;
        return true;
    }

    function _credit(bytes32 disputeId, address account, uint256 amount) private {
        if (amount == 0) return;
        withdrawable[account] += amount;
        emit Credited(disputeId, account, amount);
    }

    function _checkPeriod(uint256 period) private pure {
        if (period < MIN_PERIOD || period > MAX_PERIOD) revert InvalidPeriod(period);
    }

    /// @dev Zero for any signature that is not 65 bytes, has v outside {27, 28} or a high s.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v != 27 && v != 28) return address(0);
        if (uint256(s) > HALF_CURVE_ORDER) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
